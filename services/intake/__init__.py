"""HTTP lead intake and the buyer API (docs/intake.md, docs/buyer-api.md)."""
