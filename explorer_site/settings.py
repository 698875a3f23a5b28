"""Settings read from environment variables, with defaults for one machine."""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, "1" if default else "0").lower() in ("1", "true", "yes", "on")


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", True)
# A development key is fine while the server listens on 127.0.0.1 only; production sets one.
DEVELOPMENT_SECRET_KEY = "dev-only-key-the-server-listens-on-loopback"  # noqa: S105
SECRET_KEY = os.environ.get("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
if not DEBUG and SECRET_KEY in ("", DEVELOPMENT_SECRET_KEY):
    # Anyone could sign sessions and share links with the key in this file.
    raise ImproperlyConfigured("DEBUG=0 needs a SECRET_KEY of its own (a long random string)")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
# HTTPS=1 behind a proxy that ends TLS and says so in X-Forwarded-Proto (set by the proxy
# alone): cookies only over HTTPS, plain HTTP redirected, and HSTS for SECURE_HSTS_SECONDS.
HTTPS = env_bool("HTTPS", False)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_htmx",
    "template_partials",
    "ninja",
    "explorer",
]

MIDDLEWARE = [
    # Django's own middleware, as explorer.middleware runs it in the event loop (see there).
    "explorer.middleware.SecurityMiddleware",
    "explorer.security.ContentSecurityPolicyMiddleware",
    # Before every middleware that reads the database (sessions, users, tokens).
    "explorer.availability.DatabaseUnavailableMiddleware",
    "explorer.middleware.StaticFilesMiddleware",
    "explorer.middleware.SessionMiddleware",
    "explorer.middleware.CommonMiddleware",
    "explorer.middleware.CsrfViewMiddleware",
    "explorer.middleware.AuthenticationMiddleware",
    "explorer.authentication.TokenAuthenticationMiddleware",
    "explorer.ratelimit.RateLimitMiddleware",
    "explorer.middleware.MessageMiddleware",
    "explorer.middleware.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "explorer_site.urls"

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
            ],
        },
    },
]

ASGI_APPLICATION = "explorer_site.asgi.application"

# CONN_MAX_AGE: seconds the threads that serve requests keep their database connection (checked
# before reuse). On PostgreSQL a new connection per request costs more than the request's
# queries, but each server process may then hold one per kept thread (explorer/middleware.py).
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("CONN_MAX_AGE", 0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several requests write at once (uploads, deletes); wait for the lock instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20

REDIS_URL = os.environ.get("REDIS_URL", "")
# Messages waiting to be read, per channel; over Redis all the connections of one server
# process share one. When a viewer opens a capture, every other viewer of it answers at once
# (explorer/presence/): with 50 viewers the default of 100 overflowed and closed their sockets.
CHANNEL_CAPACITY = env_int("CHANNEL_CAPACITY", 10000)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # A connection waits for messages in a blocking read of 5 s (brpop_timeout): the
                # redis client's default socket timeout, also 5 s, cut it short and closed every
                # websocket that had been idle that long.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
                "capacity": CHANNEL_CAPACITY,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": CHANNEL_CAPACITY},
        }
    }

# The cache holds the rate limits' buckets: shared by every server process through Redis,
# per process in memory without it.
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Where `manage.py collectstatic` puts them; with DEBUG=0 WhiteNoise serves them from there.
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))

# Capture files: uploads are streamed to a staging folder and moved in when complete.
CAPTURES_DIR = Path(os.environ.get("CAPTURES_DIR", BASE_DIR / "captures"))
MAX_UPLOAD_MB = env_int("MAX_UPLOAD_MB", 2048)
# A compressed capture (gzip) is read whole by the engine: its packets may take this much.
MAX_UNCOMPRESSED_MB = env_int("MAX_UNCOMPRESSED_MB", MAX_UPLOAD_MB)
# What one user may keep: captures, and megabytes of stored files (0: no limit).
UPLOAD_MAX_CAPTURES_PER_USER = env_int("UPLOAD_MAX_CAPTURES_PER_USER", 1000)
UPLOAD_MAX_MB_PER_USER = env_int("UPLOAD_MAX_MB_PER_USER", 100 * 1024)

# Rate limits, "N/S": N at once, then N per S seconds ("0": no limit). Sign-ins count only
# failed attempts, per client address and per username; uploads count requests per user;
# filters count each new filter run or statistic per user (see explorer/ratelimit.py).
RATE_LIMIT_LOGIN_PER_IP = os.environ.get("RATE_LIMIT_LOGIN_PER_IP", "30/300")
RATE_LIMIT_LOGIN_PER_USERNAME = os.environ.get("RATE_LIMIT_LOGIN_PER_USERNAME", "10/300")
RATE_LIMIT_UPLOADS = os.environ.get("RATE_LIMIT_UPLOADS", "300/300")
RATE_LIMIT_FILTERS = os.environ.get("RATE_LIMIT_FILTERS", "600/60")

# The dissection engine (Wireshark's sharkd, tshark and capinfos).
WIRESHARK_BIN_DIR = os.environ.get("WIRESHARK_BIN_DIR", "")
ENGINE_IDLE_SECONDS = env_int("ENGINE_IDLE_SECONDS", 300)
ENGINE_EXTRA_IDLE_SECONDS = env_int("ENGINE_EXTRA_IDLE_SECONDS", 30)
ENGINE_PROCESSES_PER_CAPTURE = env_int("ENGINE_PROCESSES_PER_CAPTURE", 2)
ENGINE_REQUEST_TIMEOUT = env_int("ENGINE_REQUEST_TIMEOUT", 600)
# Address space of each sharkd process, in MB (0: no limit); a million packets take ~1.7 GB.
ENGINE_MEMORY_MB = env_int("ENGINE_MEMORY_MB", 4096)
# sharkd processes holding captures, across all captures (0: no limit); beyond it the least
# recently used idle one is closed, or the request waits this long and is told the engine is busy.
ENGINE_MAX_PROCESSES = env_int("ENGINE_MAX_PROCESSES", 8)
ENGINE_BUSY_WAIT_SECONDS = env_int("ENGINE_BUSY_WAIT_SECONDS", 30)
# Resident memory of all those sessions together, in MB (0: no limit; default: half the
# machine's). A capture about to load counts as its estimate until it has loaded.
ENGINE_MEMORY_BUDGET_MB = env_int(
    "ENGINE_MEMORY_BUDGET_MB", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**21
)
# With several server processes: every sharkd session lives in `manage.py run_engine`, reached
# at tcp://HOST:PORT or unix:///PATH, so each capture is loaded once for all of them.
ENGINE_URL = os.environ.get("ENGINE_URL", "")
PREVIEW_ROWS = env_int("PREVIEW_ROWS", 200)
# Search summaries (a tshark pass over each upload) and exports in `manage.py run_worker`
# instead of in the server process that was asked (SUMMARY_WORKER is its former name).
BACKGROUND_WORKER = env_bool("BACKGROUND_WORKER", env_bool("SUMMARY_WORKER", False))
# How long an export's runner holds it without renewing: after a crash, the time before
# another process runs it again.
EXPORT_LEASE_SECONDS = env_int("EXPORT_LEASE_SECONDS", 60)
# How long a worker decoding a live capture goes unheard before another one takes over.
LIVE_DECODER_LEASE_SECONDS = env_int("LIVE_DECODER_LEASE_SECONDS", 10)
# How often each server process repeats who views a capture through it; a viewer of a process
# not heard of for 2.5 times this long (the process died) is dropped from the others' lists.
PRESENCE_INTERVAL_SECONDS = env_int("PRESENCE_INTERVAL_SECONDS", 30)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}

# Accounts: pages need a signed-in user (or an opened share link); scripts use API tokens.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "explorer:capture_list"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
