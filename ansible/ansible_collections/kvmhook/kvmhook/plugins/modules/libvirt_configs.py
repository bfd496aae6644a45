#!/usr/bin/python
# Copyright 2026 kvmhook maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: libvirt_configs
short_description: Check and fix libvirt domain configs before a Gentoo qemu merge
version_added: "0.1.0"
description:
  - Runs kvmhook on the managed host. It reads every libvirt domain config (and with
    O(session), the users' session configs), and finds what the pending C(app-emulation/qemu)
    merge would break, such as a stale C(qemu-kvm) emulator or a machine type the new QEMU
    removes.
  - With O(state=fixed) it fixes what can be fixed, with backups, and brings a running
    libvirt daemon in line. With O(state=undone) it puts back the files of the last fix.
  - The task fails when error findings remain that kvmhook cannot fix, and when kvmhook
    could not do its job. Errors that a fix would fix do not fail O(state=checked); they set
    RV(needs_fix).
author:
  - kvmhook maintainers (@kvmhook)
requirements:
  - kvmhook on the managed host (app-portage/kvmhook), with the Python that runs the module
options:
  state:
    description:
      - V(checked) reports and writes nothing.
      - V(fixed) fixes what can be fixed, keeping a backup of every file it changes.
      - V(undone) restores the files of the last fix run (or of O(run)).
    type: str
    choices: [checked, fixed, undone]
    default: checked
  root:
    description:
      - The system's root folder.
    type: path
    default: /
  session:
    description:
      - Also the users' session config folders (C(~/.config/libvirt/qemu)). kvmhook only
        reports on folders it does not own.
    type: bool
    default: false
  targets:
    description:
      - The C(QEMU_SOFTMMU_TARGETS) the pending qemu merge installs, such as V(x86_64).
      - By default portage says, on a Gentoo root.
    type: list
    elements: str
  qemu_version:
    description:
      - The C(app-emulation/qemu) version about to be merged. By default portage says.
    type: str
  installed_version:
    description:
      - The C(app-emulation/qemu) version installed now. By default portage says.
    type: str
  keep_type:
    description:
      - Keep C(type='qemu') domains on TCG emulation instead of moving them to KVM.
    type: bool
    default: false
  machines:
    description:
      - With O(state=fixed), also move domains off machine types that the pending qemu
        removes. The guest then sees new hardware.
    type: bool
    default: false
  connect:
    description:
      - The libvirt daemon URI that owns the configs. By default C(LIBVIRT_DEFAULT_URI), else
        C(qemu:///system) for O(root=/) when its socket exists.
    type: str
  run:
    description:
      - With O(state=undone), the backup run to restore instead of the last one.
    type: str
attributes:
  check_mode:
    description: Nothing is written; C(changed) and RV(fixed) say what a fix would do.
    support: full
  diff_mode:
    description: The unified diff of each file that is (or would be) changed.
    support: full
notes:
  - Run it with privileges (C(become)) to fix the system's configs.
seealso:
  - name: kvmhook
    description: The kvmhook command and its portage hook.
    link: https://github.com/kvmhook/kvmhook
"""

EXAMPLES = r"""
- name: Check the libvirt configs before a world update
  kvmhook.kvmhook.libvirt_configs:
    state: checked
  register: kvmhook_check

- name: Fix them, with backups (try it first with --check --diff)
  kvmhook.kvmhook.libvirt_configs:
    state: fixed
  become: true

- name: Fix them for a qemu merge that installs two targets, moving removed machine types
  kvmhook.kvmhook.libvirt_configs:
    state: fixed
    targets: [x86_64, aarch64]
    machines: true
  become: true

- name: Put back the files of the last fix
  kvmhook.kvmhook.libvirt_configs:
    state: undone
  become: true
"""

RETURN = r"""
findings:
  description: What is left to see to, one entry per finding (after a fix, what it did not fix).
  returned: always
  type: list
  elements: dict
  contains:
    file:
      description: The config file.
      type: str
    line:
      description: The line of the finding, or null for the whole file.
      type: int
    domain:
      description: The domain's name, when known.
      type: str
    kind:
      description: The kind of finding, such as C(wrapper-emulator) or C(removed-machine).
      type: str
    severity:
      description: C(error) (the qemu merge would stop or the guest would not start) or C(warning).
      type: str
    fixable:
      description: Whether O(state=fixed) fixes it.
      type: bool
    current:
      description: The value found.
      type: str
    proposed:
      description: The value a fix writes, or null.
      type: str
    message:
      description: What it means, and what to do.
      type: str
  sample:
    - file: /etc/libvirt/qemu/vm1.xml
      line: 21
      domain: vm1
      kind: wrapper-emulator
      severity: error
      fixable: true
      current: /usr/bin/qemu-kvm
      proposed: /usr/bin/qemu-system-x86_64
      message: qemu 2.0 and later install no qemu-kvm wrapper
changes:
  description: The findings that the fix fixed (in check mode, would fix).
  returned: when O(state=fixed)
  type: list
  elements: dict
fixed:
  description: The files written (in check mode, the files a fix would change; for
    O(state=undone), the files restored).
  returned: always
  type: list
  elements: str
  sample: [/etc/libvirt/qemu/vm1.xml]
backup:
  description: The backup run folder that undo restores from, or null.
  returned: always
  type: str
  sample: /var/lib/kvmhook/backups/20261130T083500Z.1
merge:
  description: The pending qemu merge as kvmhook took it, and from where.
  returned: when O(state) is V(checked) or V(fixed)
  type: dict
  sample:
    installed: ["10.0.2"]
    pending: 10.1.0
    targets: [x86_64]
    source: portage
needs_fix:
  description: Whether error findings remain that O(state=fixed) would fix.
  returned: always
  type: bool
errors:
  description: How many error findings remain.
  returned: always
  type: int
daemon:
  description: The libvirt daemon link, whether it was reached, and one line about it.
  returned: always
  type: dict
synced:
  description: What became of each daemon's copy of a changed file.
  returned: when O(state) is V(fixed) or V(undone)
  type: list
  elements: dict
scanned:
  description: How many configs were read in each folder.
  returned: when O(state) is V(checked) or V(fixed)
  type: list
  elements: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from kvmhook import api, report
except ImportError:
    api = report = None
    IMPORT_ERROR = traceback.format_exc()
else:
    IMPORT_ERROR = None

MAX_NAMED = 5  # findings named in a failure message


def _as_json(result):
    """kvmhook's --json document, shaped for Ansible: fixed is what a dry run would change."""
    doc = report.result_doc(result)
    for key in ("schema", "root", "diff"):
        doc.pop(key, None)
    if result.dry_run:
        doc["fixed"] = list(result.planned)
        if result.command == "fix":
            doc["changes"] = [f.as_json() for f in result.changes]
    doc["errors"] = len(result.errors)
    doc["needs_fix"] = any(f.fixable for f in result.errors)
    return doc


def _failure(result):
    """Why the task fails: error findings that kvmhook cannot fix, or None."""
    stuck = [f for f in result.errors if not f.fixable]
    if not stuck:
        return None
    named = "; ".join(f"{f.file}: [{f.kind}] {f.message}" for f in stuck[:MAX_NAMED])
    more = f" (and {len(stuck) - MAX_NAMED} more)" if len(stuck) > MAX_NAMED else ""
    return f"kvmhook: {len(stuck)} error finding(s) it cannot fix: {named}{more}"


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="checked", choices=["checked", "fixed", "undone"]),
            root=dict(type="path", default="/"),
            session=dict(type="bool", default=False),
            targets=dict(type="list", elements="str"),
            qemu_version=dict(type="str"),
            installed_version=dict(type="str"),
            keep_type=dict(type="bool", default=False),
            machines=dict(type="bool", default=False),
            connect=dict(type="str"),
            run=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    if api is None:
        module.fail_json(msg=missing_required_lib("kvmhook"), exception=IMPORT_ERROR)

    p = module.params
    scanning = dict(
        session=p["session"],
        targets=p["targets"],
        qemu_version=p["qemu_version"],
        installed_version=p["installed_version"],
        connect=p["connect"],
    )
    try:
        if p["state"] == "undone":
            result = api.undo(
                p["root"], run=p["run"], connect=p["connect"], dry_run=module.check_mode
            )
        elif p["state"] == "fixed":
            result = api.fix(
                p["root"],
                keep_type=p["keep_type"],
                machines=p["machines"],
                dry_run=module.check_mode,
                diff=module._diff,
                **scanning,
            )
        else:
            result = api.check(p["root"], **scanning)
    except api.KvmhookError as err:
        intact = " Every original is as it was." if err.intact else ""
        module.fail_json(msg=f"kvmhook could not do its job: {err}.{intact}")

    out = _as_json(result)
    out["changed"] = result.changed
    if module._diff and result.diffs:
        out["diff"] = [{"prepared": diff[1]} for diff in result.diffs]
    why = _failure(result)
    if why:
        module.fail_json(msg=why, **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
