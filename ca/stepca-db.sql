-- step-ca's database for CA replicas (README "High availability"), run as the stepca role in the stepca
-- database before step-ca's first start. step-ca makes its tables only when they are missing, so these two
-- are made here, as it would make them, with what app-pki adds:
-- - used_ott (spent one-time tokens): step-ca spends a token with a SELECT ... FOR UPDATE of a row that
--   does not exist yet, then an INSERT ... ON CONFLICT DO UPDATE. Two requests with one token at the same
--   moment (on one replica or two) would both succeed. The trigger refuses the UPDATE: the second request
--   fails and nothing is signed with it.
-- - x509_certs (every certificate signed): the GUI's read-only role may read it and used_ott, nothing else.
CREATE TABLE IF NOT EXISTS x509_certs (nkey BYTEA CHECK (octet_length(nkey) <= 255), nvalue BYTEA, PRIMARY KEY (nkey));
CREATE TABLE IF NOT EXISTS used_ott (nkey BYTEA CHECK (octet_length(nkey) <= 255), nvalue BYTEA, PRIMARY KEY (nkey));

CREATE OR REPLACE FUNCTION app_pki_token_spent_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'this one-time token was spent already';
END
$$;
DROP TRIGGER IF EXISTS app_pki_token_spent_once ON used_ott;
CREATE TRIGGER app_pki_token_spent_once BEFORE UPDATE ON used_ott FOR EACH ROW EXECUTE FUNCTION app_pki_token_spent_once();

GRANT SELECT ON x509_certs, used_ott TO pki_gui;
