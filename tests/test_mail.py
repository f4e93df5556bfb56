"""Mail: SMTP from EMAIL_URL, and in the embedded run files a newcomer can read."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.mail import send_mail
from django.test import Client

from tests.support.factories import UserFactory

ROOT = Path(__file__).resolve().parent.parent


def _settings_with(**env: str) -> dict:
    script = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({k: str(getattr(s, k, '')) for k in ('EMAIL_BACKEND', 'EMAIL_HOST', "
        "'EMAIL_PORT', 'EMAIL_USE_TLS', 'EMAIL_HOST_USER', 'DEFAULT_FROM_EMAIL', "
        "'EMAIL_FILE_PATH')}))"
    )
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    import json

    return json.loads(out.strip().splitlines()[-1])


def test_smtp_comes_from_email_url_and_the_sender_from_the_environment():
    got = _settings_with(
        EMAIL_URL="smtp+tls://mailer:s3cret@smtp.example.com:587",
        DEFAULT_FROM_EMAIL="billing@example.com",
    )
    assert got["EMAIL_BACKEND"] == "django.core.mail.backends.smtp.EmailBackend"
    assert (got["EMAIL_HOST"], got["EMAIL_PORT"], got["EMAIL_USE_TLS"]) == (
        "smtp.example.com",
        "587",
        "True",
    )
    assert (got["EMAIL_HOST_USER"], got["DEFAULT_FROM_EMAIL"]) == ("mailer", "billing@example.com")


def test_the_embedded_run_writes_mail_to_files(tmp_path):
    got = _settings_with(TOLLGATE_STATE_DIR=str(tmp_path))
    assert got["EMAIL_BACKEND"].endswith("filebased.EmailBackend")
    assert got["EMAIL_FILE_PATH"] == str(tmp_path / "mail")


@pytest.mark.django_db
def test_staff_read_the_mail_written_to_files(settings, tmp_path):
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = str(tmp_path)
    send_mail("[Tollgate] Low balance", "Acme has $0.42 left.", "t@example.com", ["a@example.com"])
    send_mail(
        "[Tollgate] Channel disabled",
        "openai-1 refused our key.",
        "t@example.com",
        ["ops@example.com"],
    )
    staff = Client()
    staff.force_login(UserFactory(is_staff=True))
    page = staff.get("/admin/mail/").content.decode()
    assert page.index("Channel disabled") < page.index("Low balance")  # newest first
    assert "Acme has $0.42 left." in page and "ops@example.com" in page
    assert str(tmp_path) in page
    customer = Client()
    customer.force_login(UserFactory())
    assert customer.get("/admin/mail/").status_code == 302  # to the admin sign-in
