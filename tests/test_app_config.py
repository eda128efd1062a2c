"""The app's security settings (.streamlit/config.toml): medical images stay private."""

import os
import tomllib

import pytest


@pytest.fixture
def config(project_root) -> dict:
    with open(project_root / ".streamlit" / "config.toml", "rb") as handle:
        return tomllib.load(handle)


def test_no_usage_statistics_leave_the_machine(config):
    assert config["browser"]["gatherUsageStats"] is False


def test_upload_limit_fits_a_dicom_but_is_bounded(config):
    limit_mb = config["server"]["maxUploadSize"]
    assert 50 <= limit_mb <= 500


def test_xsrf_protection_is_on_and_errors_show_no_tracebacks(config):
    assert config["server"]["enableXsrfProtection"] is True
    assert config["client"]["showErrorDetails"] == "none"


def test_streamlit_reads_these_settings(config, project_root):
    # A misspelt key would be ignored silently: check Streamlit itself sees the values.
    from streamlit import config as st_config

    shown = st_config.get_option("client.showErrorDetails")  # page tests turn details on: keep that
    cwd = os.getcwd()
    os.chdir(project_root)
    try:
        st_config.get_config_options(force_reparse=True)
        assert st_config.get_option("browser.gatherUsageStats") is False
        assert st_config.get_option("server.enableXsrfProtection") is True
        assert st_config.get_option("server.maxUploadSize") == config["server"]["maxUploadSize"]
        assert st_config.get_option("server.fileWatcherType") == "none"  # watchers cost a class's server CPU
    finally:
        os.chdir(cwd)
        st_config.get_config_options(force_reparse=True)
        st_config.set_option("client.showErrorDetails", shown)
