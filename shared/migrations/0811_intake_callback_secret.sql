-- Each source key signs its posts' callbacks with a secret of its own (HMAC-SHA256; docs/intake.md
-- "Callbacks"): random, shown once with the token at creation. Kept as it is, not hashed: signing
-- needs the secret itself. Keys made before this column have none: their callbacks go unsigned.
ALTER TABLE source_api_keys ADD COLUMN callback_secret text;
