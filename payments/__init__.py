"""The payment domain: gateways, gateway events and their signatures, the webhook processor, reconciliation."""
