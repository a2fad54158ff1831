#!/usr/bin/env bash
# Installs everything vmshift and its test suite need on Debian 12, then builds .venv.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(
    libguestfs-tools python3-guestfs python3-hivex python3-libnbd python3-libvirt
    qemu-utils qemu-system-x86 nbdkit libnbd-bin debootstrap
    libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu libxml2-utils
    openssh-server openssh-client ovmf python3-venv
    # bench/ compares vmshift with virt-v2v on the same guest.
    virt-v2v
    # libguestfs boots its appliance with the host's kernel.
    linux-image-amd64
    # The test-guest factory: NTFS tools, an rpm database writer, cpio for initramfs images,
    # a static busybox that runs the stub tools inside the phony Linux guests.
    ntfs-3g rpm cpio zstd gdisk fdisk dosfstools xfsprogs lvm2 libhivex-bin file initramfs-tools-core busybox-static
    # Windows conversion reads virtio-win ISOs (bsdtar); the tests make such ISOs (xorriso).
    libarchive-tools xorriso
    # Fault-injection tests show an nbdkit export with failing reads as a file (nbdfuse).
    fuse3
    # -o rhv -os HOST:/PATH mounts the NFS export storage domain for the run.
    nfs-common
    # -i libvirt -ip: the tests run a private libvirtd that asks for a SASL login (saslpasswd2).
    sasl2-bin
    # -ic esx:// and vpx://: disks are read by vmshift's nbdkit python plugin (https_plugin.py);
    # the tests build govmomi's vSphere simulator from Debian's Go sources.
    nbdkit-plugin-python golang-go golang-github-vmware-govmomi-dev
    # P2V sends only used blocks (partclone's maps); its tests make btrfs, exfat and vfat (mtools).
    partclone btrfs-progs exfatprogs mtools
    # `vmshift p2v-image` makes its hybrid ISO with grub-mkrescue (BIOS and UEFI GRUB images).
    grub-pc-bin grub-efi-amd64-bin
    # Fleet plans across conversion hosts: Celery (from PyPI, see pyproject.toml) with a Redis
    # broker; the tests start their own redis-server on 127.0.0.1. The plan dashboard's test
    # drives Debian's Chromium headless (through Playwright, without its own browsers).
    redis-server chromium
)

missing=()
for pkg in "${DEBS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    sudo_cmd=()
    if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
    "${sudo_cmd[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The guestfs, hivex, nbd and libvirt bindings exist only for Debian's own interpreter.
if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c 'import guestfs, hivex' 2>/dev/null; then
    rm -rf .venv
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
.venv/bin/vmshift --version
