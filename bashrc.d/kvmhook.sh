# kvmhook: fix or explain stale qemu-kvm paths in libvirt configs before qemu's pkg_pretend.
# Sourced from /etc/portage/bashrc (see 'kvmhook install-hook'). It defines functions in the
# pretend phase only, and forks nothing for any package but app-emulation/qemu >= 2.
# Settings (make.conf, /etc/portage/env or the environment):
#   KVMHOOK_MODE=explain|fix|warn|off   (default explain)
#   KVMHOOK_PYTHON=/path/to/python      (default python3)

if [[ ${EBUILD_PHASE} == pretend && -z ${__KVMHOOK_CHAINED} ]]; then
	__kvmhook_pre_pkg_pretend() {
		[[ ${CATEGORY}/${PN} == app-emulation/qemu ]] || return 0
		local major=${PV%%.*}
		[[ ${major} =~ ^[0-9]+$ ]] && (( 10#${major} >= 2 )) || return 0

		local mode=${KVMHOOK_MODE:-explain}
		case ${mode} in
			off) return 0 ;;
			explain|fix|warn) ;;
			*)
				ewarn "kvmhook: unknown KVMHOOK_MODE='${mode}', using explain"
				mode=explain
				;;
		esac

		# The targets this merge installs: portage exports QEMU_SOFTMMU_TARGETS per package;
		# USE holds them too, in case USE_EXPAND did not reach the environment.
		local targets=${QEMU_SOFTMMU_TARGETS} flag
		if [[ -z ${targets} ]]; then
			for flag in ${USE}; do
				[[ ${flag} == qemu_softmmu_targets_* ]] && targets+=" ${flag#qemu_softmmu_targets_}"
			done
		fi

		local python=${KVMHOOK_PYTHON:-python3}
		if ! type -P "${python}" >/dev/null && [[ ! -x ${python} ]]; then
			ewarn "kvmhook: ${python} not found; the qemu ebuild's own check still runs"
			return 0
		fi

		local -a args=(hook --mode "${mode}" --root "${EROOT%/}/")
		[[ -n ${targets// } ]] && args+=(--targets "${targets}")
		local out status line
		# -I: no PYTHONPATH, user site or current folder decides what root runs.
		out=$("${python}" -I -m kvmhook "${args[@]}" 2>&1)
		status=$?

		while IFS= read -r line; do
			case ${line%% *} in
				eerror|ewarn|elog|einfo) "${line%% *}" "${line#* }" ;;
				'') ;;
				*) [[ ${status} == [03] ]] && ewarn "kvmhook: ${line}" ;;
			esac
		done <<<"${out}"

		case ${status} in
			0) return 0 ;;
			3) die "kvmhook: libvirt domain configs need attention before this qemu merge (see above)" ;;
			*)
				ewarn "kvmhook could not run (exit status ${status}); the qemu ebuild's own check still runs:"
				ewarn "${out##*$'\n'}"
				return 0
				;;
		esac
	}

	__KVMHOOK_CHAINED=1
	if declare -F pre_pkg_pretend >/dev/null; then
		# Keep a pre_pkg_pretend defined before this file: run it first, under another name.
		__kvmhook_def=$(declare -f pre_pkg_pretend)
		eval "__kvmhook_prev_pre_pkg_pretend${__kvmhook_def#pre_pkg_pretend}"
		unset __kvmhook_def
		pre_pkg_pretend() {
			__kvmhook_prev_pre_pkg_pretend "$@" || return
			__kvmhook_pre_pkg_pretend "$@"
		}
	else
		pre_pkg_pretend() {
			__kvmhook_pre_pkg_pretend "$@"
		}
	fi
fi
