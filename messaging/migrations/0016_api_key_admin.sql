-- An API key flagged admin (`flask api-key create NAME --admin`) reads every caller's sends
-- (GET /sends, GET /messagestatus, POST /sends/<ref>/cancel); any other key reads only its
-- own. IF NOT EXISTS: a database that ran this as 0011 (the drop-in branch) has it already.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS admin BOOLEAN NOT NULL DEFAULT false;
