"""Provider health: each provider's calls and final statuses by second (provider_calls), and
the share of its weight it holds (provider_health), shared by every process (migration 0023)."""

from messaging.queries import array_literal

# The counts of one writer's second: a row per connection, so writers never wait on a row.
_BUCKET = "date_trunc('second', now())"
_WRITER = "pg_backend_pid()::text"


def note_calls(cur, provider, accepted=0, refused=0, errors=0):
    """Count calls to a provider in this second: answered, refused unprocessed, failed."""
    cur.execute(
        f"""
        INSERT INTO provider_calls AS c (provider, writer, bucket, accepted, refused, errors)
        VALUES (%s, {_WRITER}, {_BUCKET}, %s, %s, %s)
        ON CONFLICT (provider, bucket, writer) DO UPDATE
        SET accepted = c.accepted + EXCLUDED.accepted, refused = c.refused + EXCLUDED.refused,
            errors = c.errors + EXCLUDED.errors
        """,
        (provider, accepted, refused, errors),
    )


def finals_of(changed: str) -> str:
    """A CTE (starting with a comma) counting the messages of CTE `changed` (with columns
    provider, sendlogid, status) that became final, with the seconds since their send (or
    its sendAt), per provider, when the statement's %(count_finals)s is true."""
    return f"""
        , finals AS (
            INSERT INTO provider_calls AS c (provider, writer, bucket, finals, finalseconds)
            SELECT f.provider, {_WRITER}, {_BUCKET}, count(*),
                   sum(GREATEST(0, EXTRACT(EPOCH FROM (now() AT TIME ZONE 'utc')
                                - GREATEST(sendlog.senttime, COALESCE(sendlog.sendat,
                                                                      sendlog.senttime)))))
            FROM {changed} AS f JOIN sendlog ON sendlog.id = f.sendlogid
            WHERE %(count_finals)s AND f.provider IS NOT NULL
              AND f.status IN ('delivered', 'failed')
            GROUP BY f.provider
            ON CONFLICT (provider, bucket, writer) DO UPDATE
            SET finals = c.finals + EXCLUDED.finals,
                finalseconds = c.finalseconds + EXCLUDED.finalseconds
            RETURNING 1
        )
    """


def window_counts(cur, window_seconds):
    """Return {provider: (accepted, refused, errors, finals, final seconds)} over the window."""
    cur.execute(
        """
        SELECT provider, sum(accepted), sum(refused), sum(errors), sum(finals),
               sum(finalseconds)
        FROM provider_calls WHERE bucket > now() - make_interval(secs => %s)
        GROUP BY provider
        """,
        (window_seconds,),
    )
    return {row[0]: tuple(row[1:]) for row in cur.fetchall()}


def drop_old_calls(cur, older_than_seconds):
    cur.execute(
        "DELETE FROM provider_calls WHERE bucket < now() - make_interval(secs => %s)",
        (older_than_seconds,),
    )


def lock_for_evaluation(cur, providers, every_seconds):
    """Lock the health rows of these providers not evaluated within `every_seconds` (making
    missing ones, at full weight), skipping those another process holds; return
    [(provider, factor, seconds since its factor changed)]."""
    cur.execute(
        """
        INSERT INTO provider_health (provider)
        SELECT unnest(%s::varchar[]) ON CONFLICT (provider) DO NOTHING
        """,
        (array_literal(providers),),
    )
    cur.execute(
        """
        SELECT provider, factor, EXTRACT(EPOCH FROM now() - changedat) FROM provider_health
        WHERE provider = ANY(%s::varchar[])
          AND evaluatedat <= now() - make_interval(secs => %s)
        ORDER BY provider
        FOR UPDATE SKIP LOCKED
        """,
        (array_literal(providers), every_seconds),
    )
    return [(name, float(factor), float(age)) for name, factor, age in cur.fetchall()]


def set_health(cur, provider, factor, reason, changed):
    """Store an evaluation: the factor (and when it changed, if it did) and why."""
    cur.execute(
        """
        UPDATE provider_health
        SET factor = %s, reason = %s, evaluatedat = now(),
            changedat = CASE WHEN %s THEN now() ELSE changedat END
        WHERE provider = %s
        """,
        (factor, reason, changed, provider),
    )


def health_rows(cur):
    """Return {provider: (factor, reason)}."""
    cur.execute("SELECT provider, factor, reason FROM provider_health")
    return {name: (float(factor), reason) for name, factor, reason in cur.fetchall()}
