"""The foundation every part shares: settings, errors, database models, per-domain contracts."""
