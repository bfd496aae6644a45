"""The Ansible module kvmhook.kvmhook.libvirt_configs, run by a real ansible-playbook on
localhost against throw-away roots; ansible-doc and ansible-test sanity on the module."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Root, domain_xml

from kvmhook.__main__ import build_parser

TOP = Path(__file__).resolve().parents[1]
COLLECTIONS = TOP / "ansible"
COLLECTION = COLLECTIONS / "ansible_collections/kvmhook/kvmhook"
MODULE = "kvmhook.kvmhook.libvirt_configs"
BIN = Path(sys.executable).parent
STALE = b"<emulator>/usr/bin/qemu-kvm</emulator>"


def ansible_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "ansible-home"
    home.mkdir(exist_ok=True)
    return dict(
        os.environ,
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
        ANSIBLE_HOME=str(home),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_REMOTE_TEMP=str(home / "remote-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_DEPRECATION_WARNINGS="0",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
    )


def play(tmp_path: Path, args: dict, *flags: str) -> tuple[subprocess.CompletedProcess, dict]:
    """One task of the module in a real ansible-playbook on localhost; its registered result
    (saved even when the task fails) and the run."""
    out = tmp_path / "result.json"
    out.unlink(missing_ok=True)
    playbook = tmp_path / "play.yml"
    tasks = [
        {"name": "kvmhook", MODULE: args, "register": "result", "ignore_errors": True},
        {
            "name": "save the result",
            "ansible.builtin.copy": {"content": "{{ result | to_json }}", "dest": str(out)},
            "check_mode": False,
            "diff": False,
        },
    ]
    playbook.write_text(json.dumps([{"hosts": "all", "gather_facts": False, "tasks": tasks}]))
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", *flags, str(playbook)],
        capture_output=True,
        text=True,
        env=ansible_env(tmp_path),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


@pytest.fixture
def stale_root(tmp_path) -> Root:
    r = Root(tmp_path / "root")
    r.add("vm1.xml", domain_xml("vm1"))
    r.add("vm2.xml", domain_xml("vm2", emulator="/usr/bin/qemu-system-x86_64"))
    return r


def files(r: Root) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in r.qemu.iterdir()}


def test_check_mode_says_what_would_change_and_writes_nothing(tmp_path, stale_root):
    before = stale_root.snapshot()
    _, result = play(tmp_path, {"state": "fixed", "root": str(stale_root.path)}, "--check")
    assert result["changed"] is True and not result.get("failed")
    assert result["fixed"] == [str(stale_root.qemu / "vm1.xml")]
    assert [f["kind"] for f in result["changes"]] == ["wrapper-emulator"]
    assert result["backup"] is None
    assert stale_root.snapshot() == before


def test_diff_mode_shows_each_file(tmp_path, stale_root):
    before = stale_root.snapshot()
    proc, result = play(
        tmp_path, {"state": "fixed", "root": str(stale_root.path)}, "--check", "--diff"
    )
    path = stale_root.qemu / "vm1.xml"
    assert [d["prepared"].splitlines()[:2] for d in result["diff"]] == [
        [f"--- {path}", f"+++ {path}"]
    ]
    assert "-    <emulator>/usr/bin/qemu-kvm</emulator>" in proc.stdout
    assert "+    <emulator>/usr/bin/qemu-system-x86_64</emulator>" in proc.stdout
    assert stale_root.snapshot() == before


def test_fix_then_nothing_left_then_undo(tmp_path, stale_root):
    originals = files(stale_root)
    proc, result = play(tmp_path, {"state": "fixed", "root": str(stale_root.path)}, "--diff")
    assert result["changed"] is True and not result.get("failed")
    assert result["fixed"] == [str(stale_root.qemu / "vm1.xml")]
    assert os.path.isdir(result["backup"])
    assert STALE not in (stale_root.qemu / "vm1.xml").read_bytes()
    assert (stale_root.qemu / "vm2.xml").read_bytes() == originals["vm2.xml"]
    assert "+    <emulator>/usr/bin/qemu-system-x86_64</emulator>" in proc.stdout
    assert "changed: [localhost]" in proc.stdout.split("TASK [save the result]")[0]

    _, again = play(tmp_path, {"state": "fixed", "root": str(stale_root.path)})
    assert again["changed"] is False and again["fixed"] == [] and not again["findings"]

    _, would = play(tmp_path, {"state": "undone", "root": str(stale_root.path)}, "--check")
    assert would["changed"] is True and would["fixed"] == result["fixed"]
    assert STALE not in (stale_root.qemu / "vm1.xml").read_bytes()

    _, undone = play(tmp_path, {"state": "undone", "root": str(stale_root.path)})
    assert undone["changed"] is True and undone["backup"] == result["backup"]
    assert files(stale_root) == originals
    _, nothing = play(tmp_path, {"state": "undone", "root": str(stale_root.path)})
    assert nothing["changed"] is False


def test_checked_reports_without_failing_on_what_a_fix_fixes(tmp_path, stale_root):
    before = stale_root.snapshot()
    _, result = play(
        tmp_path,
        {"root": str(stale_root.path), "targets": ["x86_64", "aarch64"], "qemu_version": "10.1.0"},
    )
    assert result["changed"] is False and not result.get("failed")
    assert result["needs_fix"] is True and result["errors"] == 1
    assert result["merge"]["targets"] == ["aarch64", "x86_64"]
    assert result["merge"]["pending"] == "10.1.0"
    assert stale_root.snapshot() == before


def test_an_unfixable_file_fails_with_a_clear_message(tmp_path, stale_root):
    described = domain_xml(
        "vm3",
        emulator="/usr/bin/qemu-system-x86_64",
        extra="  <description>was /usr/bin/qemu-kvm</description>\n",
    )
    stale_root.add("vm3.xml", described)
    _, result = play(tmp_path, {"state": "fixed", "root": str(stale_root.path)})
    assert result["failed"] is True
    assert result["msg"].startswith("kvmhook: 1 error finding(s) it cannot fix: ")
    assert str(stale_root.qemu / "vm3.xml") in result["msg"] and "[grep-match]" in result["msg"]
    # what it could fix, it fixed, and says so
    assert result["changed"] is True and result["fixed"] == [str(stale_root.qemu / "vm1.xml")]
    assert (stale_root.qemu / "vm3.xml").read_bytes() == described


def test_kvmhook_that_cannot_run_fails_with_one_line(tmp_path):
    _, result = play(tmp_path, {"root": str(tmp_path / "missing")})
    assert result["failed"] is True
    assert (
        result["msg"]
        == f"kvmhook could not do its job: --root: {tmp_path / 'missing'} is not a folder."
    )
    _, result = play(tmp_path, {"root": str(tmp_path), "targets": ["x68_64"]})
    assert result["failed"] is True and "did you mean x86_64?" in result["msg"]


def test_ansible_doc_renders_the_module_and_its_options_mirror_the_cli(tmp_path):
    env = ansible_env(tmp_path)
    text = subprocess.run(
        [str(BIN / "ansible-doc"), "-t", "module", MODULE], capture_output=True, text=True, env=env
    )
    assert text.returncode == 0, text.stderr
    assert "EXAMPLES:" in text.stdout and "RETURN VALUES:" in text.stdout
    doc = json.loads(
        subprocess.run(
            [str(BIN / "ansible-doc"), "--json", "-t", "module", MODULE],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
    )[MODULE]
    options = set(doc["doc"]["options"])
    sub = build_parser()._subparsers._group_actions[0].choices
    cli = {a.dest for name in ("fix", "undo") for a in sub[name]._actions if a.dest != "help"}
    assert options == (cli - {"json", "dry_run", "list"}) | {"state"}
    assert set(doc["doc"]["options"]["state"]["choices"]) == {"checked", "fixed", "undone"}
    assert {"findings", "fixed", "backup", "merge"} <= set(doc["return"])
    assert doc["doc"]["attributes"]["check_mode"]["support"] == "full"
    assert doc["doc"]["attributes"]["diff_mode"]["support"] == "full"


# ansible-test fetches a pip bootstrap script from ci-files.testing.ansible.com, which this
# machine cannot reach; this one puts pip in its fresh venvs with ensurepip, then installs the
# pinned pip from the package index that pip is configured with.
GET_PIP = """import subprocess, sys
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.run([sys.executable, "-m", "ensurepip", "--default-pip"], check=True,
               stdout=subprocess.DEVNULL)
subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *args], check=True)
"""


def test_ansible_test_sanity_passes_for_the_module(tmp_path):
    import ansible_test

    source = Path(ansible_test.__file__).parent / "_internal/python_requirements.py"
    pip = re.search(r"pip='([0-9.]+)'", source.read_text())
    assert pip, "ansible-test's pip version not found"
    # A home of its own, kept between runs: its venvs are built once.
    home = Path.home() / ".cache/kvmhook-ansible-test"
    cache = home / ".ansible/test/cache"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / f"get_pip_{pip.group(1).replace('.', '_')}.py").write_text(GET_PIP)
    work = tmp_path / "ansible_collections/kvmhook/kvmhook"
    shutil.copytree(COLLECTION, work, ignore=shutil.ignore_patterns("output", "__pycache__"))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    proc = subprocess.run(
        [str(BIN / "ansible-test"), "sanity", "--python", version, "--color", "no"]
        + ["plugins/modules/libvirt_configs.py"],
        cwd=work,
        capture_output=True,
        text=True,
        env=dict(os.environ, HOME=str(home), PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}"),
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    ran = re.findall(r'Running sanity test "([a-z0-9-]+)"', proc.stdout + proc.stderr)
    assert {"validate-modules", "ansible-doc", "pylint", "import", "compile"} <= set(ran)


def test_the_readme_playbook_names_real_modules(tmp_path):
    readme = (TOP / "README.md").read_text()
    block = readme.split("<!-- playbook: tests/test_ansible.py checks its syntax -->\n```yaml\n")[1]
    playbook = tmp_path / "site.yml"
    playbook.write_text(block.split("```")[0])
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[hypervisors]\nlocalhost\n")
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "-i", str(inventory), str(playbook)],
        capture_output=True,
        text=True,
        env=ansible_env(tmp_path),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # a module name that does not exist is refused the same way
    playbook.write_text(playbook.read_text().replace("libvirt_configs", "libvirt_confs"))
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "-i", str(inventory), str(playbook)],
        capture_output=True,
        text=True,
        env=ansible_env(tmp_path),
    )
    assert proc.returncode != 0
