"""`python -m payments.providers PROVIDER BODY_FILE [URL]`: print a signed curl command."""

from payments.providers import main

main()
