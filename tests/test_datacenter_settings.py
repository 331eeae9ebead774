"""Data Center settings: a second source beside Cloud, one clear line per mistake, the token
never shown."""

from __future__ import annotations

import pytest

from app.config import SettingsError, settings_from_env
from app.datacenter_settings import datacenter_settings_from_env


def test_no_data_center_url_means_no_data_center_source() -> None:
    assert datacenter_settings_from_env({}) is None
    assert settings_from_env({}).datacenter is None


def test_an_http_access_token_alone_configures_the_source() -> None:
    settings = settings_from_env(
        {
            "BITBUCKET_DC_URL": "https://Bitbucket.Example.com/bitbucket/",
            "BITBUCKET_DC_TOKEN": "tok-1",
            "BITBUCKET_DC_PROJECTS": "plat, core ,PLAT",
        }
    )
    dc = settings.datacenter
    assert dc is not None
    assert dc.api_url == "https://Bitbucket.Example.com/bitbucket/rest/api/latest"
    assert dc.host == "bitbucket.example.com"
    assert dc.projects == ("PLAT", "CORE")
    assert dc.username == ""
    assert dc.credential_label == "HTTP access token (Bearer)"
    assert (dc.rate_per_second, dc.burst) == (5.0, 60)
    assert settings.workspaces == ()  # Data Center alone: no Cloud workspace needed


def test_a_username_makes_the_token_a_personal_access_token() -> None:
    dc = datacenter_settings_from_env(
        {
            "BITBUCKET_DC_URL": "http://127.0.0.1:7990",
            "BITBUCKET_DC_TOKEN": "pat",
            "BITBUCKET_DC_USERNAME": "jdoe",
            "BITBUCKET_DC_RATE_PER_SECOND": "2.5",
            "BITBUCKET_DC_BURST": "10",
        }
    )
    assert dc is not None
    assert dc.credential_label == "personal access token of jdoe (Basic)"
    assert (dc.rate_per_second, dc.burst) == (2.5, 10)


def test_budget_identity_follows_the_user_and_the_server() -> None:
    def fingerprint(**env: str) -> str:
        dc = datacenter_settings_from_env({"BITBUCKET_DC_URL": "https://a.example", **env})
        assert dc is not None
        return dc.fingerprint

    by_token = fingerprint(BITBUCKET_DC_TOKEN="t1")
    assert by_token != fingerprint(BITBUCKET_DC_TOKEN="t2")
    # Data Center limits each user: two tokens of one user share one bucket.
    assert fingerprint(BITBUCKET_DC_TOKEN="t1", BITBUCKET_DC_USERNAME="u") == fingerprint(
        BITBUCKET_DC_TOKEN="t2", BITBUCKET_DC_USERNAME="u"
    )
    other_server = datacenter_settings_from_env(
        {"BITBUCKET_DC_URL": "https://b.example", "BITBUCKET_DC_TOKEN": "t1"}
    )
    assert other_server is not None and other_server.fingerprint != by_token
    assert "t1" not in by_token


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"BITBUCKET_DC_URL": "ftp://bitbucket.example"}, "BITBUCKET_DC_URL"),
        ({"BITBUCKET_DC_URL": "https://"}, "BITBUCKET_DC_URL"),
        ({"BITBUCKET_DC_URL": "https://h.example/rest/api/latest"}, "BITBUCKET_DC_URL"),
        ({"BITBUCKET_DC_URL": "https://u:p@h.example"}, "BITBUCKET_DC_URL"),
        ({"BITBUCKET_DC_TOKEN": "secret-token"}, "BITBUCKET_DC_TOKEN"),
        ({"BITBUCKET_DC_PROJECTS": "PLAT"}, "BITBUCKET_DC_PROJECTS"),
        (
            {"BITBUCKET_DC_URL": "https://h.example", "BITBUCKET_DC_USERNAME": "jdoe"},
            "BITBUCKET_DC_TOKEN",
        ),
        (
            {"BITBUCKET_DC_URL": "https://h.example", "BITBUCKET_DC_PROJECTS": "PLAT,a b"},
            "BITBUCKET_DC_PROJECTS",
        ),
        (
            {"BITBUCKET_DC_URL": "https://h.example", "BITBUCKET_DC_RATE_PER_SECOND": "0"},
            "BITBUCKET_DC_RATE_PER_SECOND",
        ),
        (
            {"BITBUCKET_DC_URL": "https://h.example", "BITBUCKET_DC_BURST": "many"},
            "BITBUCKET_DC_BURST",
        ),
    ],
)
def test_invalid_data_center_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as error:
        settings_from_env({"BITBUCKET_DC_TOKEN": "", **env, "X": "secret-token"})
    message = str(error.value)
    assert message.startswith(variable + ":")
    assert "\n" not in message
    assert "secret-token" not in message


def test_the_token_never_shows_in_a_repr() -> None:
    settings = settings_from_env(
        {"BITBUCKET_DC_URL": "https://h.example", "BITBUCKET_DC_TOKEN": "very-secret-dc-token"}
    )
    assert "very-secret-dc-token" not in repr(settings)
    assert "very-secret-dc-token" not in repr(settings.datacenter)
    assert settings.datacenter is not None and settings.datacenter.token is not None
    assert settings.datacenter.token.reveal() == "very-secret-dc-token"
