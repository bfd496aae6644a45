# Copyright 2026 kvmhook maintainers
# Distributed under the terms of the GNU General Public License v2

# One body for the release and the live ebuild: scripts/release copies it to a new version.

EAPI=8

DISTUTILS_USE_PEP517=setuptools
PYTHON_COMPAT=( python3_{12..15} )

inherit distutils-r1 optfeature shell-completion

if [[ ${PV} == 9999 ]]; then
	inherit git-r3
	EGIT_REPO_URI="https://github.com/kvmhook/kvmhook.git"
else
	inherit pypi
	KEYWORDS="~amd64"
fi

DESCRIPTION="Find and safely fix stale qemu-kvm emulator paths in libvirt domain configs"
HOMEPAGE="
	https://github.com/kvmhook/kvmhook
	https://pypi.org/project/kvmhook/
"

LICENSE="GPL-2+"
SLOT="0"

RDEPEND="
	dev-python/lxml[${PYTHON_USEDEP}]
	sys-apps/portage[${PYTHON_USEDEP}]
"
BDEPEND="
	test? (
		dev-util/shellcheck
	)
"

EPYTEST_PLUGINS=( hypothesis )
EPYTEST_IGNORE=(
	# They start a libvirt daemon, act as other users, create users or mount file systems.
	tests/test_libvirt.py
	tests/test_security.py
	# A nested emerge cannot run inside the build's sandbox.
	tests/test_portage.py
	tests/test_merge.py
	# The overlay is not part of the sdist.
	tests/test_overlay.py
	# ansible-test fetches its own tools from PyPI.
	tests/test_ansible.py
	# It renders the man page with groff and man-db, which the build need not have.
	tests/test_manpage.py
)
EPYTEST_DESELECT=(
	# ptrace (strace) is denied inside the sandbox
	tests/test_durability.py::test_kill_at_each_step_leaves_every_file_whole
	tests/test_durability.py::test_the_kill_points_are_the_calls_a_full_run_makes
	tests/test_durability.py::test_a_killed_undo_leaves_no_temp_file_after_the_next_run
	tests/test_snippet.py::test_forks_nothing_for_other_packages
	tests/test_snippet.py::test_strace_sees_the_fork_for_qemu
	# real tmpfs mounts
	tests/test_failures.py::test_real_full_disk
	tests/test_failures.py::test_real_read_only
	# the build folder is writable by portage's group: install-hook rightly refuses it
	tests/test_snippet.py::test_install_hook
	tests/test_snippet.py::test_hook_path_prefers_the_installed_snippet
)

distutils_enable_tests pytest

src_install() {
	distutils-r1_src_install
	# The snippet runs the kvmhook command, which python-exec points at a Python it was
	# built for, whatever python3 is.
	sed -e "s|^\t__kvmhook_entry=$|\t__kvmhook_entry=${EPREFIX}/usr/bin/kvmhook|" \
		bashrc.d/kvmhook.sh > "${T}"/kvmhook.sh || die
	grep -q "__kvmhook_entry=${EPREFIX}/usr/bin/kvmhook$" "${T}"/kvmhook.sh ||
		die "the snippet's entry point was not set"
	insinto /usr/share/kvmhook
	doins "${T}"/kvmhook.sh
	doman man/kvmhook.1
	dobashcomp completions/kvmhook
}

pkg_postinst() {
	optfeature "bringing a running libvirt daemon in line with each fix" \
		dev-python/libvirt-python
	[[ -n ${REPLACING_VERSIONS} ]] && return
	elog "To let kvmhook look at your libvirt domain configs before every qemu"
	elog "merge, wire its portage hook once (it adds one marked line to"
	elog "/etc/portage/bashrc; 'kvmhook uninstall-hook' removes it):"
	elog "  kvmhook install-hook"
	elog "By default the hook explains what to change and stops the merge."
	elog "Set KVMHOOK_MODE=fix in make.conf to have it fix the configs, with"
	elog "backups under /var/lib/kvmhook, and let the merge go on."
}
