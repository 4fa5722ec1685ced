"""Per-caller limits: what each originator used in its current windows (caller_usage)."""

from messaging.queries import NOW_UTC

# How each counter's window is cut: date_trunc's unit and the window's length.
WINDOWS = {"minute": "1 minute", "day": "1 day"}


def add_usage(cur, originator, counter, unit, amount):
    """Add `amount` to the caller's counter in the current `unit` window (the row stays
    locked until the transaction ends, so concurrent callers take turns); return (used now,
    seconds until the window ends, whether this began the window)."""
    cur.execute(
        f"""
        INSERT INTO caller_usage AS u (originator, counter, window_start, window_end, used)
        VALUES (%(originator)s, %(counter)s, date_trunc(%(unit)s, {NOW_UTC}),
                date_trunc(%(unit)s, {NOW_UTC}) + %(length)s::interval, %(amount)s)
        ON CONFLICT (originator, counter, window_start) DO UPDATE SET used = u.used + EXCLUDED.used
        RETURNING used, extract(epoch FROM window_end - {NOW_UTC}), xmax = 0
        """,
        {
            "originator": originator,
            "counter": counter,
            "unit": unit,
            "length": WINDOWS[unit],
            "amount": amount,
        },
    )
    used, seconds_left, began = cur.fetchone()
    return used, float(seconds_left), began


def delete_ended_windows(cur, originator):
    """Delete the caller's rows of windows that have ended (skipping any another transaction
    holds: the next window's first send takes them)."""
    cur.execute(
        f"""
        DELETE FROM caller_usage WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM caller_usage
            WHERE originator = %s AND window_end <= {NOW_UTC}
            FOR UPDATE SKIP LOCKED))
        """,
        (originator,),
    )


def usage(cur, originator):
    """Return {counter: used} of the caller's current windows."""
    cur.execute(
        f"""
        SELECT counter, used FROM caller_usage
        WHERE originator = %s AND window_start <= {NOW_UTC} AND window_end > {NOW_UTC}
        """,
        (originator,),
    )
    return dict(cur.fetchall())
