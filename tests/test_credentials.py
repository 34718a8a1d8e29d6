"""One password reader for the daemon, ``push``, ``record`` and ``simulate``, one precedence.

An explicit password file beats ``SIGMOID_EDGE_PASSWORD``; exactly one trailing line break
is dropped from the file. Each command is driven through the code it really uses.
"""

from __future__ import annotations

import argparse

import pytest

from edge import cli as edge_cli
from edge.config import ConfigError, load_config
from edge.credentials import PASSWORD_ENV, PasswordFileError, read_password
from trainer import push
from trainer.cli import main as train_main


def daemon(password_file, env):
    cli = {"model": "model.onnx", "broker": "mqtt://localhost", "node": "n", "username": "u"}
    if password_file:
        cli["password_file"] = str(password_file)
    return load_config(cli=cli, env=env).password


def record_or_simulate(password_file, env, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    parser = argparse.ArgumentParser()
    edge_cli.add_client_args(parser, broker_required=False)
    args = parser.parse_args(["--password-file", str(password_file)] if password_file else [])
    return edge_cli.client_kwargs(args)["password"]


def push_command(password_file, env, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return push.read_password(password_file)


READERS = {
    "daemon": lambda f, env, mp: daemon(f, env),
    "record/simulate": record_or_simulate,
    "push": push_command,
}


@pytest.fixture(autouse=True)
def no_password_in_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"")  # load_config checks only that it exists


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("content, expected", [
    ("s3cret\n", "s3cret"),
    ("s3cret\r\n", "s3cret"),
    ("s3cret", "s3cret"),
    (" s3cret \n\n", " s3cret \n"),  # spaces and all but one line break are the password's
])
def test_the_file_wins_over_the_environment_and_loses_one_line_break(
        reader, content, expected, tmp_path, monkeypatch):
    path = tmp_path / "password"
    path.write_bytes(content.encode())
    got = READERS[reader](path, {PASSWORD_ENV: "from-the-environment"}, monkeypatch)
    assert got == expected


@pytest.mark.parametrize("reader", READERS)
def test_the_environment_without_a_file(reader, monkeypatch):
    assert READERS[reader](None, {PASSWORD_ENV: " env \n"}, monkeypatch) == " env \n"
    assert read_password(None, {}) == ""


def test_an_unreadable_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(PasswordFileError, match=f"cannot read the password file {missing}"):
        read_password(missing, {})
    with pytest.raises(ConfigError, match="password_file"):
        daemon(missing, {})
    with pytest.raises(push.PushError, match="password file"):
        push.read_password(str(missing))


def test_push_command_line_says_what_file_is_wrong(tmp_path, capsys):
    missing = tmp_path / "nope"
    code = train_main(["push", str(tmp_path / "m.onnx"), "--key", str(tmp_path / "k"),
                       "--broker", "mqtt://127.0.0.1:1", "--node", "n",
                       "--password-file", str(missing)])
    assert code != 0
    assert str(missing) in capsys.readouterr().err
