"""The bash snippet on its own, and wiring it into /etc/portage/bashrc."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import domain_xml, run_module

from kvmhook import hook

SNIPPET = Path(__file__).resolve().parents[1] / "bashrc.d" / "kvmhook.sh"

# Stand-ins for portage's output functions, so that the snippet runs in plain bash.
PORTAGE_FUNCS = """
eerror() { echo "eerror: $*"; }
ewarn() { echo "ewarn: $*"; }
elog() { echo "elog: $*"; }
einfo() { echo "einfo: $*"; }
die() { echo "die: $*"; exit 9; }
"""


@pytest.fixture
def recorder(tmp_path) -> tuple[Path, Path]:
    """A KVMHOOK_PYTHON that writes down its arguments instead of running kvmhook."""
    log = tmp_path / "calls"
    script = tmp_path / "fake-python"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    script.chmod(0o755)
    return script, log


def bash(script: str, env: dict[str, str], trace: Path | None = None):
    command = ["bash", "--norc", "--noprofile", "-c", PORTAGE_FUNCS + script]
    if trace is not None:
        command = ["strace", "-f", "-qq", "-e", "trace=fork,vfork,clone,clone3", "-o", str(trace)]
        command += ["bash", "--norc", "--noprofile", "-c", PORTAGE_FUNCS + script]
    base = {"PATH": os.environ["PATH"], "EBUILD_PHASE": "pretend"}
    return subprocess.run(command, env={**base, **env}, capture_output=True, text=True, timeout=60)


def phase_env(recorder, **kw) -> dict[str, str]:
    script, _ = recorder
    env = {
        "CATEGORY": "app-emulation",
        "PN": "qemu",
        "PV": "2.0.0",
        "EROOT": "/tmp/eroot",
        "KVMHOOK_PYTHON": str(script),
        "QEMU_SOFTMMU_TARGETS": "x86_64 aarch64",
    }
    env.update(kw)
    return env


CALL = f"source {SNIPPET}; pre_pkg_pretend; echo status=$?"
# For other packages nothing is defined: a pre_pkg_pretend there is the user's own, or none.
CALL_IF_DEFINED = (
    f"source {SNIPPET}; declare -F pre_pkg_pretend >/dev/null && pre_pkg_pretend; echo status=$?"
)


@pytest.mark.parametrize("pv", ["2.0.0", "2.0.0_rc1", "10.1.0", "9999"])
def test_runs_kvmhook_for_qemu_2_and_later(recorder, pv):
    proc = bash(CALL, phase_env(recorder, PV=pv))
    assert "status=0" in proc.stdout, proc.stdout + proc.stderr
    assert recorder[1].read_text() == (
        f"-I -m kvmhook hook --mode explain --machines stop --root /tmp/eroot/ --qemu-version {pv}"
        " --targets x86_64 aarch64\n"
    )


@pytest.mark.parametrize(
    "env",
    [
        {"PV": "1.5.3"},
        {"PV": "0.15"},
        {"CATEGORY": "dev-libs", "PN": "foo", "PV": "1"},
        {"CATEGORY": "app-emulation", "PN": "qemu-guest-agent", "PV": "9.0"},
        {"KVMHOOK_MODE": "off"},
    ],
)
def test_does_nothing_otherwise(recorder, env):
    proc = bash(CALL_IF_DEFINED, phase_env(recorder, **env))
    assert not recorder[1].exists()
    nothing_defined = env != {"KVMHOOK_MODE": "off"}
    assert proc.stdout == ("status=1\n" if nothing_defined else "status=0\n")


USERS_OWN = "pre_pkg_pretend() { :; }; "


@pytest.mark.parametrize("own", ["", USERS_OWN], ids=["alone", "after the user's own"])
@pytest.mark.parametrize("env", [{"CATEGORY": "dev-libs", "PN": "foo", "PV": "1"}, {"PV": "1.5.3"}])
def test_forks_nothing_for_other_packages(recorder, tmp_path, env, own):
    trace = tmp_path / "trace"
    proc = bash(own + CALL_IF_DEFINED, phase_env(recorder, **env), trace=trace)
    assert "status=" in proc.stdout
    forks = [line for line in trace.read_text().splitlines() if "clone" in line or "fork" in line]
    assert forks == []


def test_strace_sees_the_fork_for_qemu(recorder, tmp_path):
    # The same measurement as above is able to see a fork when there is one.
    trace = tmp_path / "trace"
    bash(CALL, phase_env(recorder), trace=trace)
    assert any("clone" in line or "fork" in line for line in trace.read_text().splitlines())


def test_sourcing_outside_pretend_defines_nothing():
    script = f'before=$(declare -F); source {SNIPPET}; [ "$before" = "$(declare -F)" ] && echo same'
    for phase in ("setup", "compile", "preinst", "postinst", "depend"):
        assert bash(script, {"EBUILD_PHASE": phase}).stdout == "same\n"


def test_targets_from_use_when_not_exported(recorder):
    env = phase_env(
        recorder,
        QEMU_SOFTMMU_TARGETS="",
        USE="abi_x86_64 qemu_softmmu_targets_x86_64 qemu_softmmu_targets_riscv64 vnc",
    )
    bash(CALL, env)
    assert recorder[1].read_text().endswith("--targets  x86_64 riscv64\n")


def test_no_targets_known_means_no_targets_option(recorder):
    bash(CALL, phase_env(recorder, QEMU_SOFTMMU_TARGETS="", USE="vnc"))
    assert "--targets" not in recorder[1].read_text()


def test_user_pre_pkg_pretend_keeps_running_first(recorder):
    script = (
        'pre_pkg_pretend() { echo "user hook"; }\n'
        f"source {SNIPPET}\nsource {SNIPPET}\npre_pkg_pretend; echo status=$?"
    )
    proc = bash(script, phase_env(recorder))
    assert proc.stdout == "user hook\nstatus=0\n"
    assert recorder[1].read_text().count("hook --mode") == 1


def test_mode_and_unknown_mode(recorder):
    bash(CALL, phase_env(recorder, KVMHOOK_MODE="fix"))
    assert "--mode fix" in recorder[1].read_text()
    proc = bash(CALL, phase_env(recorder, KVMHOOK_MODE="fixx"))
    assert "unknown KVMHOOK_MODE='fixx'" in proc.stdout
    assert recorder[1].read_text().splitlines()[-1].startswith("-I -m kvmhook hook --mode explain")


def test_machines_setting_and_the_replaced_version_are_passed(recorder):
    bash(CALL, phase_env(recorder, KVMHOOK_MACHINES="update", REPLACING_VERSIONS="10.0.0"))
    call = recorder[1].read_text().splitlines()[-1]
    assert "--machines update" in call and "--installed-version 10.0.0" in call
    proc = bash(CALL, phase_env(recorder, KVMHOOK_MACHINES="upgrade"))
    assert "unknown KVMHOOK_MACHINES='upgrade'" in proc.stdout
    assert "--machines stop" in recorder[1].read_text().splitlines()[-1]


def test_missing_python_warns_and_goes_on(recorder):
    proc = bash(CALL, phase_env(recorder, KVMHOOK_PYTHON="/nonexistent/python3"))
    assert "ewarn: kvmhook: /nonexistent/python3 not found" in proc.stdout
    assert "status=0" in proc.stdout


def test_kvmhook_failing_to_run_warns_and_goes_on(tmp_path):
    broken = tmp_path / "python"
    broken.write_text(
        "#!/bin/sh\necho 'ModuleNotFoundError: No module named kvmhook' >&2\nexit 1\n"
    )
    broken.chmod(0o755)
    proc = bash(
        CALL,
        {
            "CATEGORY": "app-emulation",
            "PN": "qemu",
            "PV": "8.2.0",
            "EROOT": str(tmp_path),
            "KVMHOOK_PYTHON": str(broken),
        },
    )
    assert "kvmhook could not run (exit status 1)" in proc.stdout
    assert "No module named kvmhook" in proc.stdout and "status=0" in proc.stdout


def qemu_phase(root: Path, **extra: str) -> dict[str, str]:
    """qemu 8.2's pretend phase on root, running this installation's kvmhook."""
    return {
        "CATEGORY": "app-emulation",
        "PN": "qemu",
        "PV": "8.2.0",
        "EROOT": str(root),
        "KVMHOOK_PYTHON": sys.executable,
        **extra,
    }


def test_lines_reach_portage_functions_and_status_3_dies(tmp_path):
    root = tmp_path / "root"
    (root / "etc/libvirt/qemu").mkdir(parents=True)
    (root / "etc/libvirt/qemu/vm.xml").write_bytes(domain_xml())
    env = qemu_phase(root, QEMU_SOFTMMU_TARGETS="x86_64")
    proc = bash(CALL, env)
    assert "eerror: kvmhook: 1 libvirt domain config(s)" in proc.stdout
    assert f"eerror: {root}/etc/libvirt/qemu/vm.xml (domain vm1):" in proc.stdout
    assert f"kvmhook fix --root {root} --targets x86_64" in proc.stdout
    assert "die: kvmhook:" in proc.stdout and "status=" not in proc.stdout
    proc = bash(CALL, {**env, "KVMHOOK_MODE": "warn"})
    assert "ewarn: kvmhook: 1 libvirt domain config(s)" in proc.stdout
    assert "status=0" in proc.stdout


def test_the_environment_cannot_choose_what_python_runs(tmp_path):
    """PYTHONPATH, the user site and the current folder do not reach the hook's Python."""
    fake = tmp_path / "planted"
    (fake / "kvmhook").mkdir(parents=True)
    (fake / "kvmhook/__init__.py").write_text("")
    (fake / "kvmhook/__main__.py").write_text("print('eerror PLANTED')\n")
    root = tmp_path / "root"
    (root / "etc/libvirt/qemu").mkdir(parents=True)
    env = qemu_phase(
        root,
        PYTHONPATH=str(fake),
        PYTHONUSERBASE=str(fake),
        PYTHONSTARTUP=str(fake / "kvmhook/__main__.py"),
    )
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", PORTAGE_FUNCS + CALL],
        env={"PATH": os.environ["PATH"], "EBUILD_PHASE": "pretend", **env},
        cwd=fake,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "PLANTED" not in proc.stdout + proc.stderr
    assert "status=0" in proc.stdout


def test_shellcheck_is_clean():
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    completion = SNIPPET.parents[1] / "completions" / "kvmhook"
    proc = subprocess.run(
        [shellcheck, "-s", "bash", str(SNIPPET), str(completion)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout


# install-hook, uninstall-hook, hook-path


def test_install_hook_creates_bashrc_once(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    for _ in range(2):
        proc = run_module("install-hook", "--root", str(root))
        assert proc.returncode == 0
    bashrc = (root / "etc/portage/bashrc").read_text()
    snippet = run_module("hook-path", "--root", str(root)).stdout.strip()
    # a pip or venv install wires its own interpreter
    assert bashrc == hook.source_line(snippet, sys.executable)
    assert f"source {snippet} {sys.executable}; fi" in bashrc
    assert stat.S_IMODE(os.stat(root / "etc/portage/bashrc").st_mode) == 0o644


def test_install_hook_keeps_the_users_lines_and_mode(tmp_path):
    root = tmp_path / "root"
    (root / "etc/portage").mkdir(parents=True)
    bashrc = root / "etc/portage/bashrc"
    bashrc.write_text("# mine\npre_pkg_setup() { :; }")
    bashrc.chmod(0o600)
    assert run_module("install-hook", "--root", str(root)).returncode == 0
    text = bashrc.read_text()
    assert text.startswith("# mine\npre_pkg_setup() { :; }\n") and text.count(hook.MARKER) == 1
    assert stat.S_IMODE(os.stat(bashrc).st_mode) == 0o600
    assert run_module("uninstall-hook", "--root", str(root)).returncode == 0
    assert bashrc.read_text() == "# mine\npre_pkg_setup() { :; }\n"
    assert stat.S_IMODE(os.stat(bashrc).st_mode) == 0o600
    proc = run_module("uninstall-hook", "--root", str(root))
    assert proc.returncode == 0 and "No kvmhook line" in proc.stdout


def test_hook_path_prefers_the_installed_snippet(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    packaged = run_module("hook-path", "--root", str(root)).stdout.strip()
    assert Path(packaged).read_bytes() == SNIPPET.read_bytes()
    system = root / "usr/share/kvmhook/kvmhook.sh"
    system.parent.mkdir(parents=True)
    system.write_bytes(SNIPPET.read_bytes())
    assert run_module("hook-path", "--root", str(root)).stdout == "/usr/share/kvmhook/kvmhook.sh\n"
    run_module("install-hook", "--root", str(root))
    # the ebuild's snippet runs the installed kvmhook command: no interpreter is wired
    assert "source /usr/share/kvmhook/kvmhook.sh;" in (root / "etc/portage/bashrc").read_text()


def test_install_hook_refuses_an_interpreter_that_cannot_run_kvmhook_isolated(tmp_path):
    """kvmhook reachable only through PYTHONPATH: portage's isolated start would not find it."""
    root = tmp_path / "root"
    root.mkdir()
    src = Path(hook.__file__).resolve().parents[1]
    bare = shutil.which("python3", path="/usr/bin:/bin")
    proc = subprocess.run(
        [bare, "-m", "kvmhook", "install-hook", "--root", str(root)],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "does not run as portage would start it" in proc.stderr
    assert not (root / "etc/portage/bashrc").exists()


def test_install_hook_refuses_code_that_others_can_change(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone may replace what is in here
    shutil.copytree(Path(hook.__file__).parent, shared / "kvmhook", symlinks=True)
    proc = subprocess.run(
        [sys.executable, "-m", "kvmhook", "install-hook", "--root", str(root)],
        env={**os.environ, "PYTHONPATH": str(shared)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "can be written by its group or by others" in proc.stderr
    assert not (root / "etc/portage/bashrc").exists()
