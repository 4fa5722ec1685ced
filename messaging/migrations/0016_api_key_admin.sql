-- An API key flagged admin (`flask api-key create NAME --admin`) reads every caller's sends
-- (GET /sends, GET /messagestatus, POST /sends/<ref>/cancel); any other key reads only its
-- own.
ALTER TABLE api_keys ADD COLUMN admin BOOLEAN NOT NULL DEFAULT false;
