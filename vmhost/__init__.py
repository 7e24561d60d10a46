"""Managed Linux VMs for hosts without a Linux kernel (macOS, Windows): lifecycle, QEMU
command line, guest image, forwarding of commands (rootless machine, --connection)."""
