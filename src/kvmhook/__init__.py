"""kvmhook: stale QEMU emulator references in libvirt domain configs, found and fixed."""

__version__ = "0.1.0"
