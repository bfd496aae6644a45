# Copyright 2026 kvmhook maintainers
# Distributed under the terms of the GNU General Public License v2

EAPI=8

DISTUTILS_USE_PEP517=setuptools
PYTHON_COMPAT=( python3_{11..13} )

inherit distutils-r1 git-r3

DESCRIPTION="Find and safely fix stale qemu-kvm emulator paths in libvirt domain configs"
HOMEPAGE="https://github.com/kvmhook/kvmhook"
EGIT_REPO_URI="https://github.com/kvmhook/kvmhook.git"

LICENSE="GPL-2+"
SLOT="0"

RDEPEND="
	dev-python/lxml[${PYTHON_USEDEP}]
	sys-apps/portage[${PYTHON_USEDEP}]
"
BDEPEND="
	test? (
		dev-python/hypothesis[${PYTHON_USEDEP}]
		dev-util/shellcheck
		dev-debug/strace
	)
"

EPYTEST_DESELECT=(
	# a nested emerge cannot run inside the build's sandbox
	tests/test_portage.py
	# ptrace is denied inside the sandbox
	tests/test_snippet.py::test_forks_nothing_for_other_packages
	tests/test_snippet.py::test_strace_sees_the_fork_for_qemu
)

distutils_enable_tests pytest

src_install() {
	distutils-r1_src_install
	insinto /usr/share/kvmhook
	doins bashrc.d/kvmhook.sh
}

pkg_postinst() {
	elog "To let kvmhook look at your libvirt domain configs before every qemu"
	elog "merge, wire its portage hook once (it adds one marked line to"
	elog "/etc/portage/bashrc; 'kvmhook uninstall-hook' removes it):"
	elog "  kvmhook install-hook"
	elog "By default the hook explains what to change and stops the merge."
	elog "Set KVMHOOK_MODE=fix in make.conf to have it fix the configs, with"
	elog "backups under /var/lib/kvmhook, and let the merge go on."
}
