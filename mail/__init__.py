"""Customer mail: the email queue's processor and its templates."""
