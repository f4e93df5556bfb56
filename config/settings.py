"""Tollgate settings, read from the environment.

With no environment at all, Tollgate runs embedded: SQLite, Celery tasks executed
in-process, a local-memory cache and the built-in ``mock`` upstream. Setting
``DATABASE_URL`` and ``REDIS_URL`` switches to the production shape.
"""

from pathlib import Path

import environ
from celery.schedules import crontab

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").exists():
    env.read_env(str(BASE_DIR / ".env"))

# The embedded run (no DATABASE_URL, or an SQLite one) is for trying Tollgate out:
# DEBUG is on there and off everywhere else unless asked for.
EMBEDDED = env.str("DATABASE_URL", default="sqlite:").startswith("sqlite:")
DEBUG = env.bool("DEBUG", default=EMBEDDED)
EMBEDDED_SECRET_KEY = "embedded-dev-secret-key-change-me-in-production-0123456789abcdef"  # noqa: S105 - public on purpose
# ``manage.py check --deploy`` (run by scripts/prod) refuses this default.
SECRET_KEY = env.str("SECRET_KEY", default=EMBEDDED_SECRET_KEY)
ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=["*"] if DEBUG else ["localhost", "127.0.0.1", "[::1]"]
)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- HTTP security ------------------------------------------------------------
# Cookies go over HTTPS only, unless DEBUG or SECURE_COOKIES=false (plain HTTP on a
# private network).
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto, say so to trust it.
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
# The relay's clients are programs: never redirect them (a redirected POST loses
# its body in most clients).
SECURE_REDIRECT_EXEMPT = [r"^v1/", r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CONTENT_SECURITY_POLICY = env.str(
    "CONTENT_SECURITY_POLICY",
    default=(
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; object-src 'none'; base-uri 'self'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "core",
    "accounts",
    "billing",
    "relay",
    "usage",
    "console",
]

MIDDLEWARE = [
    "core.errors.JsonErrorsMiddleware",
    "core.middleware.RequestIdMiddleware",
    "core.middleware.NullCharactersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "core.middleware.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "console.context_processors.console",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=300)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded database is shared by the request threads and the in-process
    # settlement, all writing one file. Each transaction takes the write lock as it
    # begins (SQLite refuses at once, without waiting, a read transaction that later
    # wants to write while another writes), readers never wait for the writer (WAL),
    # and a writer waits its turn for up to 20 s instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # The daily roll-up's unique constraint treats NULLs as equal, which SQLite cannot
    # say; there the roll-up is written under SQLite's single writer instead
    # (usage.services.usage_daily_add), so the notice means nothing to act on.
    SILENCED_SYSTEM_CHECKS = ["models.W047"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Celery -----------------------------------------------------------------
# Without Redis, tasks run in-process right after the commit that enqueued them.
CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
# In-process (embedded) tasks must not turn a served request into an error: a failed
# settlement is logged and picked up again by the embedded sweeper.
CELERY_TASK_EAGER_PROPAGATES = False
# Workers log through LOGGING above (JSON in production), not Celery's own format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# A task taken by a worker that died is delivered again after this many seconds.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=300),
    "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_INTERVAL", default=10),
    "unacked_restore_throttle": env.int("CELERY_UNACKED_RESTORE_THROTTLE", default=10),
}
CELERY_BEAT_SCHEDULE = {
    "probe-cooling-channels": {"task": "relay.tasks.channels_probe", "schedule": 15.0},
    "settle-pending-usage": {"task": "billing.tasks.usage_settle_pending", "schedule": 30.0},
    "expire-stale-holds": {"task": "billing.tasks.holds_expire", "schedule": 60.0},
    "reconcile-ledger": {"task": "billing.tasks.ledger_reconcile", "schedule": 3600.0},
    "expire-stored-responses": {"task": "relay.tasks.responses_expire", "schedule": 3600.0},
    "monthly-statements": {
        "task": "billing.tasks.statements_generate",
        "schedule": crontab(day_of_month="1", hour="0", minute="30"),
    },
}

# --- Tollgate ---------------------------------------------------------------
TOLLGATE = {
    # Completion tokens reserved when the request sets no max_tokens.
    "DEFAULT_COMPLETION_RESERVE": env.int("TOLLGATE_DEFAULT_COMPLETION_RESERVE", default=4096),
    # Seconds an authenticated key and a price list stay in the per-process cache.
    "AUTH_CACHE_TTL": env.float("TOLLGATE_AUTH_CACHE_TTL", default=10.0),
    "PRICE_CACHE_TTL": env.float("TOLLGATE_PRICE_CACHE_TTL", default=10.0),
    "CHANNEL_CACHE_TTL": env.float("TOLLGATE_CHANNEL_CACHE_TTL", default=5.0),
    # Settlement drains start at most this often (seconds): a quiet gateway is
    # settled at once, a busy one in batches.
    "SETTLE_INTERVAL": env.float("TOLLGATE_SETTLE_INTERVAL", default=0.5),
    # An open hold older than this is released by the sweeper.
    "HOLD_TTL_SECONDS": env.int("TOLLGATE_HOLD_TTL_SECONDS", default=3600),
    # Stored responses (/v1/responses) are kept this long, as OpenAI keeps them.
    "STORED_RESPONSE_DAYS": env.int("TOLLGATE_STORED_RESPONSE_DAYS", default=30),
    # ledger_check reports a hold open this long whose request is in flight nowhere.
    "STALE_HOLD_SECONDS": env.int("TOLLGATE_STALE_HOLD_SECONDS", default=300),
    # How far below zero settlement may take a new account when a request costs more
    # than its hold (micro-USD); the rest is booked as overage.
    "DEFAULT_OVERDRAFT": env.int("TOLLGATE_DEFAULT_OVERDRAFT", default=50_000),
    # A finished request still unsettled after this long is a reconciliation breach.
    "SETTLEMENT_LAG_ALERT_SECONDS": env.int("TOLLGATE_SETTLEMENT_LAG_ALERT_SECONDS", default=600),
    # Upstream HTTP client.
    "UPSTREAM_CONNECT_TIMEOUT": env.float("TOLLGATE_UPSTREAM_CONNECT_TIMEOUT", default=5.0),
    "UPSTREAM_READ_TIMEOUT": env.float("TOLLGATE_UPSTREAM_READ_TIMEOUT", default=300.0),
    "UPSTREAM_MAX_CONNECTIONS": env.int("TOLLGATE_UPSTREAM_MAX_CONNECTIONS", default=512),
    # Channel health: failures within the window that cool a channel down, and how long.
    "HEALTH_FAILURES": env.int("TOLLGATE_HEALTH_FAILURES", default=5),
    "HEALTH_WINDOW": env.float("TOLLGATE_HEALTH_WINDOW", default=60.0),
    "HEALTH_COOLDOWN": env.float("TOLLGATE_HEALTH_COOLDOWN", default=30.0),
    "HEALTH_COOLDOWN_MAX": env.float("TOLLGATE_HEALTH_COOLDOWN_MAX", default=600.0),
    # PostgreSQL connections per web process for the relay's two per-request
    # statements, run on the event loop (core.adb).
    "DB_CONNECTIONS": env.int("TOLLGATE_DB_CONNECTIONS", default=8),
    # Threads (each with its own database connection, opened on first use) per web
    # process for what the relay does off the event loop: cache misses, Redis calls
    # for rate limits and health, refusals; and every database step on SQLite.
    "DB_THREADS": env.int("TOLLGATE_DB_THREADS", default=8),
    # Largest request body accepted on /v1/* (bytes).
    "MAX_BODY_BYTES": env.int("TOLLGATE_MAX_BODY_BYTES", default=8 * 1024 * 1024),
}
# Where the embedded demo keeps its local state (the demo key and passwords).
TOLLGATE_STATE_DIR = env.path("TOLLGATE_STATE_DIR", default=BASE_DIR / "var")
# Fernet keys that encrypt upstream keys at rest, newest first.
TOLLGATE_ENCRYPTION_KEYS = env.list("TOLLGATE_ENCRYPTION_KEY", default=[])
# /metrics answers loopback and private addresses without credentials; set this to
# let a scraper elsewhere (or behind a proxy) in with `Authorization: Bearer <token>`.
# With several web processes, also set PROMETHEUS_MULTIPROC_DIR to an empty directory
# shared by them (see relay/metrics.py). A scraper reaching the server by IP needs
# that address in ALLOWED_HOSTS.
TOLLGATE_METRICS_TOKEN = env.str("TOLLGATE_METRICS_TOKEN", default="")
DATA_UPLOAD_MAX_MEMORY_SIZE = TOLLGATE["MAX_BODY_BYTES"]

LOGIN_URL = "/login/"
# Sign-in throttling for the console and the admin (accounts/login.py): this many
# failed attempts within the window lock the username, or the client address, out
# for the cool-down.
LOGIN_THROTTLE = {
    "FAILURES_PER_USERNAME": env.int("LOGIN_FAILURES_PER_USERNAME", default=5),
    "FAILURES_PER_IP": env.int("LOGIN_FAILURES_PER_IP", default=20),
    "WINDOW_SECONDS": env.int("LOGIN_FAILURE_WINDOW_SECONDS", default=900),
    "COOLDOWN_SECONDS": env.int("LOGIN_COOLDOWN_SECONDS", default=900),
}
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "core.pagination.BoundedLimitOffsetPagination",
    "EXCEPTION_HANDLER": "core.errors.api_exception_handler",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Tollgate management API",
    "DESCRIPTION": "Accounts, credits, keys, prices, channels, usage, ledger and statements.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
# Outgoing mail (low-balance, overage and channel alerts): EMAIL_URL names an SMTP
# server: smtp+tls://user:password@host:587 (STARTTLS), smtp+ssl://...:465, or plain
# smtp://host:25. Without it the embedded run writes each message to a file
# under TOLLGATE_STATE_DIR/mail (staff read them at /admin/mail/), and any other run
# prints them to the log. EMAIL_BACKEND names any other Django backend.
if env.str("EMAIL_URL", default=""):
    vars().update(env.email_url("EMAIL_URL"))
else:
    EMAIL_BACKEND = env.str(
        "EMAIL_BACKEND",
        default="django.core.mail.backends.filebased.EmailBackend"
        if EMBEDDED
        else "django.core.mail.backends.console.EmailBackend",
    )
    EMAIL_FILE_PATH = str(Path(str(TOLLGATE_STATE_DIR)) / "mail")
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="tollgate@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# JSON lines with the request id in production; readable lines when DEBUG is on.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.logs.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "core.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # Both log every upstream URL at INFO; keep them to problems only.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        # A 4xx is the caller's mistake, answered in the response; logging each one
        # would let any client flood the logs. 5xx are still logged.
        "django.request": {"level": "ERROR"},
    },
}
