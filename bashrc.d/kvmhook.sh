# kvmhook: fix or explain stale qemu-kvm paths in libvirt configs before qemu's pkg_pretend.
# Sourced from /etc/portage/bashrc (see 'kvmhook install-hook'). It defines anything only in
# the pretend phase of app-emulation/qemu 2.0 and later, so it forks nothing for any other
# package.
# Settings (make.conf, /etc/portage/env or the environment):
#   KVMHOOK_MODE=explain|fix|warn|off   (default explain)
#   KVMHOOK_MACHINES=stop|warn|update   machine types the merge removes (default stop;
#                                       update moves them, with KVMHOOK_MODE=fix)
#   KVMHOOK_PYTHON=/path/to/python      (default: what install-hook wired, else the
#                                        installed kvmhook command, else python3)

# qemu 2.0 dropped the wrappers ("9999" counts as new); PV's leading number decides.
if [[ ${EBUILD_PHASE} == pretend && ${CATEGORY}/${PN} == app-emulation/qemu &&
	-z ${__KVMHOOK_CHAINED} && ${PV%%.*} =~ ^[0-9]+$ ]] && (( 10#${PV%%.*} >= 2 )); then
	# The interpreter 'kvmhook install-hook' wired (source's argument), and the entry point
	# that the ebuild installs (python-exec picks the Python that kvmhook was built for).
	__kvmhook_wired_python=${1-}
	__kvmhook_entry=

	__kvmhook_pre_pkg_pretend() {
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

		local python=${KVMHOOK_PYTHON:-${__kvmhook_wired_python}}
		local -a cmd=("${python:-python3}" -I -m kvmhook)
		[[ -z ${python} && -n ${__kvmhook_entry} ]] && cmd=("${__kvmhook_entry}")
		if ! type -P "${cmd[0]}" >/dev/null && [[ ! -x ${cmd[0]} ]]; then
			ewarn "kvmhook: ${cmd[0]} not found; the qemu ebuild's own check still runs"
			return 0
		fi

		local machines=${KVMHOOK_MACHINES:-stop}
		case ${machines} in
			stop|warn|update) ;;
			*)
				ewarn "kvmhook: unknown KVMHOOK_MACHINES='${machines}', using stop"
				machines=stop
				;;
		esac

		local -a args=(hook --mode "${mode}" --machines "${machines}" --root "${EROOT%/}/"
			--qemu-version "${PV}")
		[[ -n ${targets// } ]] && args+=(--targets "${targets}")
		# The version this merge replaces (the last one named; there is usually one).
		local replaced=${REPLACING_VERSIONS##* }
		[[ -n ${replaced} ]] && args+=(--installed-version "${replaced}")
		local out status line
		# No PYTHON* variable, user site or current folder decides what root runs.
		out=$(unset "${!PYTHON@}"; export PYTHONNOUSERSITE=1 PYTHONSAFEPATH=1
			"${cmd[@]}" "${args[@]}" 2>&1)
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
		# (One fork, in qemu's pretend phase only.)
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
