"""The operator's page: GET /admin (overview), /admin/sends (the sends, filtered and paged)
and /admin/sends/<ref> (one send), rendered on the server with Flask's Jinja; charts are
inline SVG, so the page runs no script at all.

The same authentication as the API: with serviceauth the browser's session cookie does;
with API keys a sign-in form keeps the key in a signed cookie (signin.py). A non-admin
sees only its own sends, as in the API. Every form posts a CSRF token tied to the caller,
and a post from another site is refused as csrf.py refuses one.
"""

from urllib.parse import urlencode

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    send_from_directory,
    url_for,
)

from messaging import charts, csrf, dashboard, service, signin
from messaging.auth import public, takes_sign_in
from messaging.errors import Forbidden, InvalidInput, MessagingError, Unauthorized
from messaging.openapi import hidden
from messaging.sends import parse_ref
from messaging.services import current as services

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates")

ASSETS = {"admin.css"}
REFRESH_SECONDS = 3  # while a send on the page is dispatching
# Scripts, frames and other sites' resources are never needed: say so to the browser.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def sign_in_state():
    return current_app.extensions["messaging.signin"]


def auth_settings():
    return services().config.authentication


def uses_sign_in_form() -> bool:
    settings = auth_settings()
    return settings.enabled and settings.service == "apikey"


def owner():
    return g.identity.owner


def page(template: str, status: int = 200, **context):
    """Render a page with what every page needs: who is signed in and a CSRF token."""
    identity = g.get("identity")
    body = render_template(
        template,
        identity=identity,
        signed_in_by_form=uses_sign_in_form() and identity is not None,
        csrf_token=sign_in_state().csrf_token(identity.name) if identity is not None else "",
        charts=charts,
        **context,
    )
    return make_response(body, status)


def check_form() -> None:
    """Refuse a post from another site, or without this caller's CSRF token."""
    settings = auth_settings()
    if csrf.from_another_site(request.headers, request.host, settings.allowed_origins):
        raise Forbidden("cross-site request refused: this form must be sent from this site")
    if not sign_in_state().csrf_valid(request.form.get("csrf_token"), g.identity.name):
        raise Forbidden("the form's CSRF token is missing, expired or not yours: reload the page")


@bp.route("", methods=["GET"])
@takes_sign_in
@hidden
def overview():
    data = dashboard.overview(services(), owner())
    return page("admin/overview.html", **data, nav="overview")


@bp.route("/sends", methods=["GET"])
@takes_sign_in
@hidden
def sends():
    filters = dashboard.send_filters(request.args)
    found, next_before = dashboard.list_sends(services(), owner(), filters)
    refresh = dashboard.any_dispatching(found) and request.args.get("refresh") != "off"
    return page(
        "admin/sends.html",
        sends=found,
        filters=filters,
        states=dashboard.SEND_STATES,
        older=_query(filters.query(before=next_before)) if next_before else None,
        newest=_query(filters.query(before=None)) if filters.before else None,
        refresh=REFRESH_SECONDS if refresh else None,
        stop_refresh=_query({**filters.query(), "refresh": "off"}),
        nav="sends",
    )


@bp.route("/sends/<refNumber>", methods=["GET"])
@takes_sign_in
@hidden
def send(refNumber):  # the API's name for it
    ref = parse_ref(refNumber)
    number = request.args.get("page", "1").strip()
    if not (number.isascii() and number.isdigit()) or int(number) < 1:
        raise InvalidInput(f"page must be a whole number from 1, not {number[:40]!r}")
    detail = dashboard.send_detail(services(), ref, owner(), int(number))
    dispatching = detail["send"]["state"] == "sending"
    refresh = dispatching and request.args.get("refresh") != "off"
    return page(
        "admin/send.html",
        **detail,
        ref=ref,
        refresh=REFRESH_SECONDS if refresh else None,
        cancelled=request.args.get("cancelled") == "1",
        nav="sends",
    )


@bp.route("/sends/<refNumber>/cancel", methods=["POST"])
@takes_sign_in
@hidden
def cancel(refNumber):  # the API's name for it
    ref = parse_ref(refNumber)
    check_form()
    service.cancel_send(services(), ref, owner())
    g.log_summary = f"ref={ref} cancelled from the operator's page"
    return redirect(url_for("admin.send", refNumber=ref, cancelled=1), 303)


@bp.route("/sign-in", methods=["GET"])
@public
@hidden
def sign_in_form():
    if not uses_sign_in_form():
        return redirect(url_for("admin.overview"), 303)
    return page("admin/sign_in.html", next=_next_page(), error=None, status=200)


@bp.route("/sign-in", methods=["POST"])
@public
@hidden
def sign_in():
    if not uses_sign_in_form():
        return redirect(url_for("admin.overview"), 303)
    settings = auth_settings()
    if csrf.from_another_site(request.headers, request.host, settings.allowed_origins):
        raise Forbidden("cross-site request refused: sign in from this site's own form")
    key = request.form.get("api_key", "").strip()
    try:
        identity = current_app.extensions["messaging.auth"].authenticate({"X-API-Key": key})
    except Unauthorized:
        return page(
            "admin/sign_in.html",
            status=401,
            next=_next_page(),
            error="That API key is not valid (unknown, revoked or mistyped).",
        )
    g.log_summary = f"{identity.name} signed in to the operator's page"
    response = redirect(_next_page(), 303)
    response.set_cookie(
        signin.COOKIE,
        sign_in_state().cookie_value(key),
        max_age=signin.SIGN_IN_SECONDS,
        path="/",
        secure=request.is_secure,
        httponly=True,
        samesite="Strict",
    )
    return response


@bp.route("/sign-out", methods=["POST"])
@public
@hidden
def sign_out():
    response = redirect(url_for("admin.sign_in_form"), 303)
    response.delete_cookie(
        signin.COOKIE, path="/", secure=request.is_secure, httponly=True, samesite="Strict"
    )
    return response


@bp.route("/static/<filename>", methods=["GET"])
@public
@hidden
def asset(filename):
    # The page's own stylesheet, shipped in the package: no CDN involved.
    if filename not in ASSETS:
        abort(404)
    return send_from_directory(bp.root_path + "/static/admin", filename, max_age=3600)


def _next_page() -> str:
    """Where to go after signing in: a page of /admin only (never another site)."""
    target = request.values.get("next", "")
    if target.startswith("/admin") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("admin.overview")


def _query(params: dict) -> str:
    return "?" + urlencode(params) if params else "?"


@bp.errorhandler(MessagingError)
def page_error(err: MessagingError):
    """Answer an error on a page as a page: to the sign-in form when a key is wanted."""
    if isinstance(err, Unauthorized) and uses_sign_in_form() and request.method == "GET":
        return redirect(url_for("admin.sign_in_form", next=request.full_path.rstrip("?")), 303)
    return page(
        "admin/error.html",
        status=err.status_code,
        message=err.message,
        sign_in_form=uses_sign_in_form(),
        serviceauth=auth_settings().enabled and auth_settings().service == "serviceauth",
        unauthorized=isinstance(err, Unauthorized),
    )


def init_app(app) -> None:
    app.register_blueprint(bp)

    @app.after_request
    def page_headers(response):
        if request.blueprint == bp.name:
            response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Referrer-Policy"] = "same-origin"
            if response.mimetype == "text/html":
                response.headers["Cache-Control"] = "no-store"
        return response
