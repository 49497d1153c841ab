"""``helpdesk policy check`` and ``helpdesk policy show`` on the shipped policies."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.policy.loader import load_policy
from gateway.policy.table import render_table
from gateway.settings import PROJECT_ROOT

POLICIES = PROJECT_ROOT / "config" / "policies"
SHIPPED = {
    # name: (title, level names 1-4, default level)
    "virtuozzo": ("Virtuozzo Platform Support", (
        "Critical Business Impact", "Significant Business Impact",
        "Minimal Business Impact", "Nominal Business Impact",
    ), 3),
    "parallels": ("Parallels Support", ("Urgent", "High", "Normal", "Enhancement"), 3),
    "jelastic": ("Jelastic Support", (
        "Critical Business Impact", "Significant Business Impact",
        "Minimal Business Impact", "Nominal Business Impact",
    ), 3),
    "vmoso": ("Vmoso Support", ("Emergency", "Critical", "Normal", "Enhancement Request"), 3),
    "lumenvox": ("LumenVox Technical Support", ("Critical", "Major", "Minor", "Other"), 3),
}
NO_CONFIG = {"HELPDESK_CONFIG": None, "HELPDESK_POLICIES_DIR": None, "HELPDESK_POLICY": None}


@pytest.fixture(autouse=True)
def _clean_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run where no ./helpdesk.toml lies around."""
    monkeypatch.chdir(tmp_path)


def run(*args: str, env: dict[str, str | None] | None = None):
    return CliRunner().invoke(main, list(args), env={**NO_CONFIG, **(env or {})})


def test_every_shipped_policy_is_checked():
    assert sorted(p.stem for p in POLICIES.glob("*.yaml")) == sorted(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_check_each_shipped_file(name):
    title, _, default = SHIPPED[name]
    result = run("policy", "check", str(POLICIES / f"{name}.yaml"))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{name}.yaml: ok ({title}, default level {default})\n"
    assert result.stderr == ""


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_show_each_shipped_policy_by_name(name):
    title, levels, _ = SHIPPED[name]
    # Without any settings file the policies folder is the repository's.
    result = run("policy", "show", name)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{title} ({name})"
    assert lines[1].startswith("Business hours: ")
    for number, level in enumerate(levels, start=1):
        assert any(line.startswith(f"{number}      {level}  ") for line in lines), level
    assert "Rules:" in lines


def test_show_reads_the_policies_folder_from_config(tmp_path):
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "desk.yaml").write_text(
        (POLICIES / "lumenvox.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    config = tmp_path / "helpdesk-test.toml"
    config.write_text(f'policies_dir = "{folder}"\n', encoding="utf-8")
    result = run("--config", str(config), "policy", "show", "desk")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "LumenVox Technical Support (desk)"


def test_show_reads_the_policies_folder_from_the_environment(tmp_path):
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "desk.yaml").write_text(
        (POLICIES / "vmoso.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    result = run("policy", "show", "desk", env={"HELPDESK_POLICIES_DIR": str(folder)})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "Vmoso Support (desk)"


def test_show_unknown_name_lists_the_known_policies():
    result = run("policy", "show", "acme")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "Error: policy show: NAME: no policy 'acme' (known: "
        "jelastic, lumenvox, parallels, virtuozzo, vmoso)\n"
    )
    assert "Traceback" not in result.output


def test_show_a_name_that_is_no_name():
    result = run("policy", "show", "../etc/passwd")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: policy show: NAME: '../etc/passwd' is not a policy name (lowercase letters, "
        "digits, - and _, at most 64 characters)\n"
    )


def test_a_name_longer_than_a_case_records_is_no_name():
    result = run("policy", "show", "v" * 65)
    assert result.exit_code == 2
    assert "is not a policy name" in result.stderr
    assert run("policy", "show", "v" * 64).stderr.endswith("(known: jelastic, lumenvox, "
                                                          "parallels, virtuozzo, vmoso)\n")


def test_show_with_a_missing_settings_file(tmp_path):
    result = run("--config", str(tmp_path / "absent.toml"), "policy", "show", "vmoso")
    assert result.exit_code == 2
    assert result.stderr == f"Error: {tmp_path / 'absent.toml'}: no such settings file\n"


def test_show_a_file_path(tmp_path):
    path = tmp_path / "sub" / "mine.yaml"
    path.parent.mkdir()
    path.write_text((POLICIES / "parallels.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    result = run("policy", "show", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "Parallels Support (mine)"
    assert "- A contact phone number is required at levels 1 and 2." in result.stdout


def test_show_a_relative_file_path(tmp_path):
    (tmp_path / "here.yml").write_text(
        (POLICIES / "jelastic.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    result = run("policy", "show", "here.yml")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "Jelastic Support (here)"


def test_show_a_missing_file_path(tmp_path):
    result = run("policy", "show", str(tmp_path / "gone.yaml"))
    assert result.exit_code == 2
    assert result.stderr == f"Error: gone.yaml: no such policy file ({tmp_path / 'gone.yaml'})\n"


def test_show_prints_exactly_the_table():
    result = run("policy", "show", "vmoso")
    assert result.stdout == render_table(load_policy(POLICIES / "vmoso.yaml"))


@pytest.mark.parametrize(("how", "named_by"), [
    ("variable", "HELPDESK_POLICY"),
    ("file", "gateway.toml"),
])
def test_an_unknown_policy_at_start_names_what_set_it(how, named_by, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gateway.toml").write_text('policy = "acme"\n' if how == "file" else "")
    env = {"HELPDESK_POLICY": "acme"} if how == "variable" else {}
    result = run("--config", str(tmp_path / "gateway.toml"), "serve", env=env)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {named_by}: policy: no policy 'acme' (known: ")
