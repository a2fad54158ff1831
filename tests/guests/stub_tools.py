"""Stand-ins for the guest's own tools inside the phony Linux guests.

Conversion steps run the guest's tools in the libguestfs appliance (g.command: a chroot into the
guest). The phony guests carry no real distribution, so they get a static busybox (/bin/busybox,
with /bin/sh -> busybox) and these shell stubs, which do what the real tool would leave behind,
simplified, and record how they were called:

    family  stub                      what it leaves
    rhel    /usr/bin/dracut           a gzip newc initramfs holding the drivers asked for
    suse    /usr/bin/dracut           (same; SUSE's default image is /boot/initrd-VERSION)
    rhel    /usr/sbin/grub2-mkconfig  grub.cfg (menu entries, or blscfg when BLS is enabled)
    suse    /usr/sbin/grub2-mkconfig
    rhel    /usr/sbin/grubby          BLS entry and grubenv edits (set-default, args, info)
    rhel    /usr/bin/grub2-editenv    grubenv edits (also used by grubby)
    rhel    /usr/bin/rpm              -e, -q, -qa against a plain list (see below), -ql of kernels
    suse    /usr/bin/rpm
    debian  /usr/sbin/update-initramfs  a gzip newc initramfs (MODULES= and the modules file)
    debian  /usr/sbin/update-grub     runs grub-mkconfig -o /boot/grub/grub.cfg, like the real one
    debian  /usr/sbin/grub-mkconfig   grub.cfg with menu entries
    debian  /usr/bin/dpkg             --purge/--remove edit /var/lib/dpkg/status; -s, -l, -L

"debian" covers every phony Debian and Ubuntu guest.

THE CALL LOG. Each stub appends one line per call to /var/log/vmshift-stub-calls.log (STUB_LOG):

    <tool> <arg1> <arg2> ...

<tool> is the stub's own name (never the path it was run by). Arguments are separated by one
space and quoted as Python's shlex.quote quotes them, only when needed, so shlex.split(line) gives
the argument vector back: `dracut -f --add-drivers 'virtio_blk virtio_net' /boot/x.img 5.14.0`.
read_calls() parses the log. A stub that runs another logs both in call order: update-grub logs
`update-grub` and then `grub-mkconfig -o /boot/grub/grub.cfg`. The line is written before the
stub does anything, so failed calls are logged too.

WHAT THE STUBS MAKE, AND WHAT THEY DO NOT
- Initramfs images (dracut, update-initramfs) are one gzip-compressed newc cpio archive (whatever
  COMPRESS= or --xz says), holding: the modules asked for and their modules.dep dependencies,
  copied from /lib/modules/VERSION to the same place in the image (usr/lib/modules on merged-/usr
  guests), a filtered modules.dep, and marker files of the tool (dracut: etc/initrd-release,
  usr/lib/dracut/build-parameter.txt with the argument vector; initramfs-tools: init,
  conf/initramfs.conf, conf/modules). Asked for means:
  dracut: --add-drivers/--force-drivers/--drivers, add_drivers/force_drivers in
  /etc/dracut.conf{,.d/*.conf}, and the root filesystem's type from /etc/fstab. No hostonly
  detection. The kernel version defaults to `uname -r` (the appliance's, so it fails like the
  real one would), the image to /boot/initramfs-VERSION.img (rhel) or /boot/initrd-VERSION
  (suse); an existing image is only replaced with -f.
  update-initramfs: /etc/initramfs-tools/modules and modules.d lists; with MODULES=most also
  every storage and filesystem driver installed (virtio included), with MODULES=dep also the
  root filesystem. -u without -k updates the newest image, -k all every image.
- grub(2)-mkconfig reads /etc/default/grub (and grub.d/*.cfg) by sourcing it, and writes for each
  /boot/vmlinuz-* (newest first) `linux <prefix>/vmlinuz-V root=<root> ro <GRUB_CMDLINE_LINUX>
  <GRUB_CMDLINE_LINUX_DEFAULT>` and its initrd line, where <root> is the first field of the /
  line of /etc/fstab, verbatim (the real tool probes the mounted device instead; UUID=
  conversion and GRUB_DISABLE_LINUX_UUID are not imitated), and <prefix> is empty when /boot has
  its own fstab line. Entries sit in an "Advanced options" submenu after a first "simple" entry
  unless GRUB_DISABLE_SUBMENU=true|y, as the real 10_linux does. With GRUB_ENABLE_BLSCFG=true
  (RHEL) it writes the blscfg grub.cfg and leaves /boot/loader/entries alone unless given
  --update-bls-cmdline, as grub2 2.06-70.el9_3 does; then every entry's options line becomes
  `root=<root> ro <GRUB_CMDLINE_LINUX> <GRUB_CMDLINE_LINUX_DEFAULT>`.
- grubby (BLS only): --default-kernel, --default-index, --default-title, --set-default[=]KERNEL,
  --set-default-index[=]N, --info[=]ALL|DEFAULT|KERNEL, --update-kernel[=]ALL|DEFAULT|KERNEL with
  --args/--remove-args. Entries are numbered newest first (version sort of the file names);
  kernel paths carry /boot when /boot is its own filesystem.
- rpm cannot edit the real (sqlite) rpm database, so `rpm -e` leaves inspection's application
  list unchanged: it removes the package from the stub's own list, /var/lib/vmshift-stub/
  rpm-packages (`NAME NAME-VERSION-RELEASE.ARCH` lines), which `rpm -q NAME` and `rpm -qa` read.
  Asking to erase a package that is not installed fails the whole call, as in rpm.
- dpkg --purge drops the package's stanza from /var/lib/dpkg/status (so inspection no longer
  lists it), deletes the files its .list names (not directories) and its info files; --remove
  keeps a stanza with "Status: deinstall ok config-files" when it has Conffiles. Not installed:
  a warning, exit 0. Maintainer scripts are not run.
- Any option a stub does not know fails the call (exit 1, "<tool> (vmshift stub): ...").

CAVEAT: `sh -c 'rpm ...'` or `sh -c 'dpkg ...'` runs busybox's own rpm/dpkg applets, which
busybox's shell prefers to anything on PATH. Run the tools by argument vector (guest.run([...]))
or by full path.
"""

from __future__ import annotations

import shlex
import struct
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.guests.rpmdb import RpmPackage

STUB_LOG = "/var/log/vmshift-stub-calls.log"
RPM_LIST = "/var/lib/vmshift-stub/rpm-packages"
_LIB = "usr/lib/vmshift-stub"
HOST_BUSYBOX = Path("/bin/busybox")
_PT_INTERP = 3


def read_calls(log: str) -> list[list[str]]:
    """The calls in a stub log's text, each as [tool, *arguments], in call order."""
    return [shlex.split(line) for line in log.splitlines() if line.strip()]


def calls_of(log: str, tool: str) -> list[list[str]]:
    """The arguments of every call of one tool, in call order."""
    return [call[1:] for call in read_calls(log) if call[0] == tool]


def _write(root: Path, rel: str, text: str | bytes, mode: int = 0o644) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(mode)


def _is_static_elf(data: bytes) -> bool:
    """An x86_64 ELF without a program interpreter: it runs in a guest that has no libc."""
    if data[:5] != b"\x7fELF\x02" or struct.unpack_from("<H", data, 18)[0] != 0x3E:
        return False
    (phoff,) = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    types = (struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum))
    return _PT_INTERP not in types


def install_busybox(root: Path, bindir: str) -> None:
    """Put the host's static busybox at BINDIR/busybox and make BINDIR/sh point to it.

    The stubs also find every applet in a directory of their own at the end of their PATH:
    busybox's shell runs applets without links only through /proc/self/exe."""
    data = HOST_BUSYBOX.read_bytes() if HOST_BUSYBOX.exists() else b""
    if not _is_static_elf(data):
        raise RuntimeError(
            f"{HOST_BUSYBOX} is missing or not a static x86_64 binary: install busybox-static "
            "(scripts/setup.sh does)"
        )
    _write(root, f"{bindir}/busybox", data, 0o755)
    sh = root / bindir / "sh"
    if sh.is_symlink() or sh.exists():
        sh.unlink()
    sh.symlink_to("busybox")
    applets = subprocess.run(
        [str(HOST_BUSYBOX), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    links = root / _LIB / "bin"
    links.mkdir(parents=True, exist_ok=True)
    for name in applets:
        if name not in ("busybox", "rpm", "dpkg", "dpkg-deb", "rpm2cpio"):
            (links / name).symlink_to(f"/{bindir}/busybox")


def install_rpm_family(root: Path, family: str, packages: Iterable[tuple[str, str]]) -> None:
    """The rhel or suse stubs; `packages` are (name, NAME-VERSION-RELEASE.ARCH) pairs."""
    if family not in ("rhel", "suse"):
        raise ValueError(f"family must be rhel or suse, not {family!r}")
    _common(root)
    image = "/boot/initramfs-$1.img" if family == "rhel" else "/boot/initrd-$1"
    _script(root, "usr/bin/dracut", "dracut", _DRACUT.replace("@IMAGE@", image))
    _script(root, "usr/sbin/grub2-mkconfig", "grub2-mkconfig", _mkconfig("/boot/grub2"))
    _script(root, "usr/bin/rpm", "rpm", _RPM)
    _write(root, RPM_LIST, "".join(f"{name} {nevra}\n" for name, nevra in packages))
    if family == "rhel":
        _script(root, "usr/sbin/grubby", "grubby", _GRUBBY)
        _script(root, "usr/bin/grub2-editenv", "grub2-editenv", _EDITENV)


def install_deb_family(root: Path) -> None:
    """The Debian/Ubuntu stubs."""
    _common(root)
    _script(root, "usr/sbin/update-initramfs", "update-initramfs", _UPDATE_INITRAMFS)
    _script(root, "usr/sbin/update-grub", "update-grub", _UPDATE_GRUB)
    _script(root, "usr/sbin/grub-mkconfig", "grub-mkconfig", _mkconfig("/boot/grub"))
    _script(root, "usr/bin/dpkg", "dpkg", _DPKG)


def _common(root: Path) -> None:
    _write(root, f"{_LIB}/common.sh", _COMMON)


def _script(root: Path, rel: str, tool: str, body: str) -> None:
    head = (
        f"#!/bin/sh\n# {tool}: a stub made for vmshift's tests (tests/guests/stub_tools.py).\n"
        f'STUB_TOOL={tool}\n. /{_LIB}/common.sh\nstub_log {tool} "$@"\n'
    )
    _write(root, rel, head + body, 0o755)


def _mkconfig(grub_dir: str) -> str:
    return _MKCONFIG.replace("@GRUB_DIR@", grub_dir)


def rpm_list(packages: Sequence[RpmPackage]) -> list[tuple[str, str]]:
    """(name, NAME-VERSION-RELEASE.ARCH) pairs, the way `rpm -q` names installed packages."""
    return [(p.name, f"{p.name}-{p.version}-{p.release}.{p.arch}") for p in packages]


# The shell below runs under busybox ash in the guest; its applets (awk, sed, cpio, gzip...) run
# without symlinks. `local` is an ash extension the stubs rely on.

_COMMON = r"""# Shared by the vmshift test stubs (tests/guests/stub_tools.py).
PATH=/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/vmshift-stub/bin
export PATH
STUB_LOG=/var/log/vmshift-stub-calls.log

# stub_log TOOL ARG...: one line, each argument quoted as Python's shlex.quote does.
stub_log() {
    local line="$1" arg
    shift
    for arg in "$@"; do
        case $arg in
            '') arg="''" ;;
            *[!A-Za-z0-9_@%+=:,./-]*) arg="'$(printf '%s' "$arg" | sed "s/'/'\"'\"'/g")'" ;;
        esac
        line="$line $arg"
    done
    mkdir -p /var/log
    printf '%s\n' "$line" >> "$STUB_LOG"
}

stub_die() {
    echo "$STUB_TOOL (vmshift stub): $*" >&2
    exit 1
}

# stub_fstab MOUNTPOINT FIELD: a field (1: device, 3: type) of the fstab line for MOUNTPOINT.
stub_fstab() {
    awk -v mp="$1" -v f="$2" '$1 !~ /^#/ && $2 == mp { print $f; exit }' /etc/fstab 2>/dev/null
}

# stub_modules KVER NAME...: paths below /lib/modules/KVER of the named modules and of all they
# depend on, from modules.dep; names that are not modules there (built in, absent) are skipped.
stub_modules() {
    local dep="/lib/modules/$1/modules.dep"
    shift
    [ -f "$dep" ] || return 0
    awk -v want="$*" '
        BEGIN {
            n = split(want, w, /[ ,]+/)
            for (i = 1; i <= n; i++) { gsub(/-/, "_", w[i]); if (w[i] != "") wanted[w[i]] = 1 }
        }
        {
            name = $1; sub(/:$/, "", name); sub(/.*\//, "", name)
            sub(/\.ko(\.[a-z0-9]+)?$/, "", name); gsub(/-/, "_", name)
            if (name in wanted) for (i = 1; i <= NF; i++) { p = $i; sub(/:$/, "", p); print p }
        }' "$dep" | sort -u
}

# stub_modules_under KVER DIR...: names of the modules installed below kernel/DIR/.
stub_modules_under() {
    local dep="/lib/modules/$1/modules.dep"
    shift
    [ -f "$dep" ] || return 0
    awk -v dirs="$*" '
        BEGIN { n = split(dirs, d, / +/) }
        {
            p = $1; sub(/:$/, "", p)
            for (i = 1; i <= n; i++) if (index(p, "kernel/" d[i] "/") == 1) {
                sub(/.*\//, "", p); sub(/\.ko(\.[a-z0-9]+)?$/, "", p); print p; break
            }
        }' "$dep"
}

# stub_initramfs OUT KVER STYLE NOTE MODULE_PATH...: write OUT, a gzip newc cpio image with the
# modules and the marker files of STYLE (dracut | initramfs-tools); NOTE goes into the marker.
stub_initramfs() {
    local out="$1" kver="$2" style="$3" note="$4" stage moddir rel f
    shift 4
    stage=$(mktemp -d /tmp/vmshift-stub.XXXXXX) || stub_die "cannot make a staging directory"
    moddir="lib/modules/$kver"
    [ -L /lib ] && moddir="usr/$moddir"
    mkdir -p "$stage/$moddir"
    for rel in "$@"; do
        mkdir -p "$stage/$moddir/${rel%/*}"
        cp "/lib/modules/$kver/$rel" "$stage/$moddir/$rel" || stub_die "cannot copy $rel"
    done
    printf '%s\n' "$@" > "$stage/.modules"
    awk 'NR == FNR { keep[$0] = 1; next } { p = $1; sub(/:$/, "", p) } p in keep' \
        "$stage/.modules" "/lib/modules/$kver/modules.dep" > "$stage/$moddir/modules.dep"
    rm -f "$stage/.modules"
    for f in modules.builtin modules.order; do
        [ -f "/lib/modules/$kver/$f" ] && cp "/lib/modules/$kver/$f" "$stage/$moddir/$f"
    done
    case $style in
        dracut)
            mkdir -p "$stage/etc" "$stage/usr/lib/dracut"
            printf 'NAME="dracut"\nID=dracut\n' > "$stage/etc/initrd-release"
            printf 'systemd\nkernel-modules\nrootfs-block\n' > "$stage/usr/lib/dracut/modules.txt"
            printf '%s\n' "$note" > "$stage/usr/lib/dracut/build-parameter.txt"
            ln -s usr/lib/systemd/systemd "$stage/init"
            ;;
        *)
            mkdir -p "$stage/conf" "$stage/scripts"
            printf '#!/bin/sh\n# initramfs-tools init (vmshift stub)\n' > "$stage/init"
            chmod 755 "$stage/init"
            cp /etc/initramfs-tools/initramfs.conf "$stage/conf/" 2>/dev/null
            printf '%s\n' "$note" > "$stage/conf/modules"
            ;;
    esac
    mkdir -p "${out%/*}"
    if ! (cd "$stage" && find . -mindepth 1 | sed 's,^\./,,' | cpio -o -H newc 2>/dev/null) \
            | gzip -9 > "$out.stub-tmp"; then
        rm -rf "$stage" "$out.stub-tmp"
        stub_die "cannot write $out"
    fi
    mv -f "$out.stub-tmp" "$out"
    rm -rf "$stage"
}

# stub_grubenv_write FILE: the variable lines on stdin become FILE, a 1024-byte grub
# environment block.
stub_grubenv_write() {
    local size
    { echo "# GRUB Environment Block"; grep -v '^#'; } > "$1.stub-tmp"
    size=$(wc -c < "$1.stub-tmp")
    [ "$size" -le 1024 ] || stub_die "$1 would grow beyond 1024 bytes"
    [ "$size" -eq 1024 ] || printf "%$((1024 - size))s" '' | tr ' ' '#' >> "$1.stub-tmp"
    mv -f "$1.stub-tmp" "$1"
}

# stub_grubenv_set FILE KEY VALUE: set one variable, in place if it is there.
stub_grubenv_set() {
    [ -f "$1" ] || : > "$1"
    K="$2" V="$3" awk '
        BEGIN { k = ENVIRON["K"]; v = ENVIRON["V"] }
        /^#/ { next }
        index($0, k "=") == 1 { if (!done) print k "=" v; done = 1; next }
        { print }
        END { if (!done) print k "=" v }' "$1" | stub_grubenv_write "$1"
}
"""

_DRACUT = r"""
force= kver= out= drivers= all= nargs=0
note="$*"
while [ $# -gt 0 ]; do
    case $1 in
        -f|--force) force=1 ;;
        --add-drivers|--force-drivers|-d|--drivers)
            [ $# -ge 2 ] || stub_die "$1 needs a value"; drivers="$drivers $2"; shift ;;
        --add-drivers=*|--force-drivers=*|--drivers=*) drivers="$drivers ${1#*=}" ;;
        --kver) [ $# -ge 2 ] || stub_die "--kver needs a value"; kver=$2; shift ;;
        --kver=*) kver=${1#*=} ;;
        --regenerate-all) all=1 ;;
        -a|--add|-m|--modules|-o|--omit|--omit-drivers|--filesystems|-I|--install|--compress|\
        -c|--conf|--confdir|--tmpdir|--add-fstab|--mount|--add-device|--kernel-cmdline|-k|\
        --kmoddir|--fwdir|--sysroot|--hostonly-mode|-L|--stdlog)
            [ $# -ge 2 ] || stub_die "$1 needs a value"; shift ;;
        -H|--hostonly|-N|--no-hostonly|-v|--verbose|-q|--quiet|--early-microcode|\
        --no-early-microcode|--no-compress|--gzip|--bzip2|--lzma|--xz|--lzo|--lz4|--zstd|\
        --lvmconf|--nolvmconf|--mdadmconf|--nomdadmconf|--fstab|--nofscks|--strip|--nostrip|\
        --hardlink|--nohardlink|--reproducible|--no-reproducible|--hostonly-cmdline|\
        --no-hostonly-cmdline|--hostonly-i18n|--no-hostonly-i18n) ;;
        --*=*) ;;
        -*) stub_die "unknown option $1" ;;
        *)
            nargs=$((nargs + 1))
            case $nargs in
                1) out=$1 ;;
                2) kver=$1 ;;
                *) stub_die "too many arguments: $1" ;;
            esac ;;
    esac
    shift
done

conf_drivers=$(cat /etc/dracut.conf /etc/dracut.conf.d/*.conf \
        /usr/lib/dracut/dracut.conf.d/*.conf 2>/dev/null | awk -v sq="'" '
    /^[ \t]*(add_drivers|force_drivers)\+?=/ {
        v = $0; sub(/^[^=]*=/, "", v); gsub(/"/, "", v); gsub(sq, "", v); printf "%s ", v
    }')

default_image() {
    echo "@IMAGE@"
}

build() {
    [ -d "/lib/modules/$1" ] || stub_die "Cannot find module directory /lib/modules/$1/"
    if [ -e "$2" ] && [ -z "$force" ]; then
        stub_die "Will not override existing initramfs ($2) without --force"
    fi
    stub_initramfs "$2" "$1" dracut "$note" \
        $(stub_modules "$1" $drivers $conf_drivers $(stub_fstab / 3))
}

set -f
if [ -n "$all" ]; then
    for kver in $(set +f; for d in /lib/modules/*; do [ -d "$d" ] && echo "${d##*/}"; done); do
        build "$kver" "$(default_image "$kver")"
    done
    exit 0
fi
[ -n "$kver" ] || kver=$(uname -r)
[ -n "$out" ] || out=$(default_image "$kver")
build "$kver" "$out"
"""

_UPDATE_INITRAMFS = r"""
mode= version= bootdir=/boot
while [ $# -gt 0 ]; do
    case $1 in
        -c|-u|-d) [ -z "$mode" ] || stub_die "only one of -c, -u, -d"; mode=${1#-} ;;
        -k) [ $# -ge 2 ] || stub_die "-k needs a version"; version=$2; shift ;;
        -b) [ $# -ge 2 ] || stub_die "-b needs a directory"; bootdir=$2; shift ;;
        -v|-t) ;;
        *) stub_die "unknown option $1" ;;
    esac
    shift
done
if [ -z "$mode" ]; then
    echo "Usage: update-initramfs {-c|-d|-u} [-k version] [-v] [-b directory]" >&2
    exit 2
fi

existing() {
    local f
    for f in "$bootdir"/initrd.img-*; do [ -f "$f" ] && echo "${f#$bootdir/initrd.img-}"; done
}

case $version in
    all)
        if [ "$mode" = c ]; then
            versions=$(for d in /lib/modules/*; do [ -d "$d" ] && echo "${d##*/}"; done)
        else
            versions=$(existing)
        fi ;;
    '')
        [ "$mode" = c ] && stub_die "-c needs -k VERSION"
        versions=$(existing | sort -V | tail -n 1) ;;
    *) versions=$version ;;
esac

setting=$(cat /etc/initramfs-tools/initramfs.conf /etc/initramfs-tools/conf.d/* 2>/dev/null \
    | awk -F= -v sq="'" '/^[ \t]*MODULES=/ { v = $2 }
        END { gsub(/[" ]/, "", v); gsub(sq, "", v); print v }')
listed=$(cat /etc/initramfs-tools/modules /usr/share/initramfs-tools/modules.d/* 2>/dev/null \
    | awk '$1 !~ /^#/ && NF { print $1 }')

set -f
for v in $versions; do
    image="$bootdir/initrd.img-$v"
    case $mode in
        d) rm -f "$image"; continue ;;
        c) [ -e "$image" ] && stub_die "$image already exists, cannot create." ;;
        u) [ -e "$image" ] || stub_die "$image does not exist. Cannot update." ;;
    esac
    [ -d "/lib/modules/$v" ] || stub_die "missing /lib/modules/$v"
    names=$listed
    case ${setting:-most} in
        most) names="$names $(stub_modules_under "$v" drivers/ata drivers/block drivers/scsi \
                  drivers/virtio drivers/message/fusion drivers/md drivers/nvme fs) \
                  $(stub_fstab / 3)" ;;
        dep) names="$names $(stub_fstab / 3)" ;;
    esac
    echo "update-initramfs: Generating $image"
    stub_initramfs "$image" "$v" initramfs-tools "$listed" $(stub_modules "$v" $names)
done
"""

_UPDATE_GRUB = r"""exec grub-mkconfig -o /boot/grub/grub.cfg "$@"
"""

_MKCONFIG = r"""
out=- update_bls=
while [ $# -gt 0 ]; do
    case $1 in
        -o|--output) [ $# -ge 2 ] || stub_die "$1 needs a file"; out=$2; shift ;;
        --output=*) out=${1#*=} ;;
        --update-bls-cmdline) update_bls=1 ;;
        --no-grubenv-update) ;;
        *) stub_die "unknown option $1" ;;
    esac
    shift
done

GRUB_DEFAULT=0 GRUB_TIMEOUT=5 GRUB_DISTRIBUTOR= GRUB_CMDLINE_LINUX= GRUB_CMDLINE_LINUX_DEFAULT=
GRUB_ENABLE_BLSCFG= GRUB_DISABLE_SUBMENU=
[ -f /etc/default/grub ] && . /etc/default/grub
for f in /etc/default/grub.d/*.cfg; do [ -f "$f" ] && . "$f"; done
echo "Generating grub configuration file ..." >&2

root=$(stub_fstab / 1)
[ -n "$root" ] || stub_die "no / line in /etc/fstab: cannot find the root device"
prefix=/boot
[ -n "$(stub_fstab /boot 1)" ] && prefix=
id=$(printf '%s' "$root" | sed 's/^UUID=//; s/[^A-Za-z0-9-]/_/g')
options="root=$root ro $GRUB_CMDLINE_LINUX $GRUB_CMDLINE_LINUX_DEFAULT"
os="${GRUB_DISTRIBUTOR:-Linux} GNU/Linux"

header() {
    printf '#\n# DO NOT EDIT THIS FILE\n#\n'
    printf '# It is automatically generated by %s (a vmshift stub) using settings\n' "$STUB_TOOL"
    printf '# from /etc/default/grub\n#\n\n'
    if [ "$GRUB_DEFAULT" = saved ]; then
        printf 'load_env\nset default="${saved_entry}"\n'
    else
        printf 'set default="%s"\n' "$GRUB_DEFAULT"
    fi
    printf 'set timeout=%s\n\n' "$GRUB_TIMEOUT"
}

initrd_of() {
    local n
    for n in "initrd.img-$1" "initrd-$1.img" "initrd-$1.gz" "initrd-$1" "initramfs-$1.img"; do
        [ -f "/boot/$n" ] && { echo "$n"; return; }
    done
}

entry() {  # TITLE ID VERSION INDENT
    local i="$4" initrd
    initrd=$(initrd_of "$3")
    printf "%smenuentry '%s' --class gnu-linux --class os \$menuentry_id_option '%s' {\n" \
        "$i" "$1" "$2"
    printf '%s\tinsmod gzio\n%s\tinsmod ext2\n' "$i" "$i"
    printf "%s\techo\t'Loading Linux %s ...'\n" "$i" "$3"
    printf '%s\tlinux\t%s/vmlinuz-%s %s\n' "$i" "$prefix" "$3" "$options"
    if [ -n "$initrd" ]; then
        printf "%s\techo\t'Loading initial ramdisk ...'\n" "$i"
        printf '%s\tinitrd\t%s/%s\n' "$i" "$prefix" "$initrd"
    fi
    printf '%s}\n' "$i"
}

menu() {
    local v first=1 flat=
    case $GRUB_DISABLE_SUBMENU in true|y) flat=1 ;; esac
    for v in $(for k in /boot/vmlinuz-*; do [ -f "$k" ] && echo "${k#/boot/vmlinuz-}"; done \
            | sort -r -V); do
        echo "Found linux image: /boot/vmlinuz-$v" >&2
        if [ -n "$first" ] && [ -z "$flat" ]; then
            entry "$os" "gnulinux-simple-$id" "$v" ""
            printf "submenu '%s' \$menuentry_id_option 'gnulinux-advanced-%s' {\n" \
                "Advanced options for $os" "$id"
        fi
        if [ -n "$flat" ]; then
            entry "$os, with Linux $v" "gnulinux-$v-advanced-$id" "$v" ""
        else
            entry "$os, with Linux $v" "gnulinux-$v-advanced-$id" "$v" "	"
        fi
        first=
    done
    if [ -z "$first" ] && [ -z "$flat" ]; then echo "}"; fi
}

bls_update() {
    local e
    for e in /boot/loader/entries/*.conf; do
        [ -f "$e" ] || continue
        O="$options" awk '/^options[ \t]/ { print "options " ENVIRON["O"]; next } { print }' \
            "$e" > "$e.stub-tmp" && mv -f "$e.stub-tmp" "$e"
    done
}

generate() {
    header
    case $GRUB_ENABLE_BLSCFG in
        true) printf 'insmod blscfg\nblscfg\n' ;;
        *) menu ;;
    esac
}

if [ "$out" = - ]; then
    generate
else
    mkdir -p "${out%/*}"
    generate > "$out.new" || stub_die "cannot write $out"
    mv -f "$out.new" "$out"
fi
if [ "$GRUB_ENABLE_BLSCFG" = true ] && [ -n "$update_bls" ]; then bls_update; fi
echo done >&2
exit 0
"""

_EDITENV = r"""
[ $# -ge 2 ] || stub_die "usage: grub2-editenv FILE list|set K=V...|unset K..."
file=$1
[ "$file" = - ] && file=/boot/grub2/grubenv
cmd=$2
shift 2
case $cmd in
    list) grep -v '^#' "$file" ;;
    set) for kv in "$@"; do stub_grubenv_set "$file" "${kv%%=*}" "${kv#*=}"; done ;;
    unset)
        for k in "$@"; do
            K="$k" awk 'index($0, ENVIRON["K"] "=") != 1' "$file" | stub_grubenv_write "$file"
        done ;;
    create) : | stub_grubenv_write "$file" ;;
    *) stub_die "unknown command $cmd" ;;
esac
"""

_GRUBBY = r"""
entries=/boot/loader/entries
env=/boot/grub2/grubenv
prefix=
[ -n "$(stub_fstab /boot 1)" ] && prefix=/boot

field() {  # FILE KEY
    awk -v k="$2" '$1 == k { sub(/^[^ \t]+[ \t]+/, ""); print; exit }' "$1"
}
sorted() {
    (set +f; for f in "$entries"/*.conf; do [ -f "$f" ] && echo "$f"; done) | sort -r -V
}
kernel_of() {
    echo "$prefix$(field "$1" linux)"
}
default_entry() {
    local saved
    saved=$(sed -n 's/^saved_entry=//p' "$env" 2>/dev/null)
    if [ -n "$saved" ] && [ -f "$entries/$saved.conf" ]; then
        echo "$entries/$saved.conf"
    else
        sorted | head -n 1
    fi
}
# select WHICH: the entry files for ALL, DEFAULT, an index or a kernel path.
select_entries() {
    local f i=0
    case $1 in
        ALL) sorted; return ;;
        DEFAULT) default_entry; return ;;
    esac
    for f in $(sorted); do
        if [ "$1" = "$i" ] || [ "$1" = "$(kernel_of "$f")" ] \
                || [ "$1" = "$(field "$f" linux)" ]; then
            echo "$f"
        fi
        i=$((i + 1))
    done
}
index_of() {
    local f i=0
    for f in $(sorted); do
        [ "$f" = "$1" ] && { echo "$i"; return; }
        i=$((i + 1))
    done
}
info() {
    local f opts
    for f in "$@"; do
        opts=$(field "$f" options)
        echo "index=$(index_of "$f")"
        echo "kernel=\"$(kernel_of "$f")\""
        echo "args=\"$(printf '%s\n' $opts | grep -v '^root=' | tr '\n' ' ' | sed 's/ $//')\""
        echo "root=\"$(printf '%s\n' $opts | sed -n 's/^root=//p')\""
        [ -n "$(field "$f" initrd)" ] && echo "initrd=\"$prefix$(field "$f" initrd)\""
        echo "title=\"$(field "$f" title)\""
        f=${f##*/}
        echo "id=\"${f%.conf}\""
    done
}
set_default() {
    [ -n "$1" ] || stub_die "The param $target is incorrect"
    local id=${1##*/}
    [ -f "$env" ] || : > "$env"
    stub_grubenv_set "$env" saved_entry "${id%.conf}"
}
update() {  # FILE: apply $add_args and $remove_args to its options line
    local opts new w r key keep
    opts=$(field "$1" options)
    new=
    for w in $opts; do
        keep=1
        for r in $remove_args $add_args; do
            [ "${w%%=*}" = "${r%%=*}" ] && keep=
        done
        [ -n "$keep" ] && new="$new $w"
    done
    for w in $add_args; do new="$new $w"; done
    O="${new# }" awk '/^options[ \t]/ { print "options " ENVIRON["O"]; next } { print }' \
        "$1" > "$1.stub-tmp" && mv -f "$1.stub-tmp" "$1"
}

set -f
action= target= add_args= remove_args=
while [ $# -gt 0 ]; do
    opt=$1 val=
    case $opt in
        --*=*) val=${opt#*=}; opt=${opt%%=*} ;;
    esac
    case $opt in
        --default-kernel|--default-index|--default-title) action=$opt ;;
        --set-default|--set-default-index|--info|--update-kernel)
            if [ -z "$val" ]; then
                [ $# -ge 2 ] || stub_die "$opt needs a value"; val=$2; shift
            fi
            action=$opt target=$val ;;
        --args|--remove-args)
            if [ -z "$val" ]; then
                [ $# -ge 2 ] || stub_die "$opt needs a value"; val=$2; shift
            fi
            if [ "$opt" = --args ]; then
                add_args="$add_args $val"
            else
                remove_args="$remove_args $val"
            fi ;;
        *) stub_die "unknown option $opt" ;;
    esac
    shift
done

case $action in
    --default-kernel) kernel_of "$(default_entry)" ;;
    --default-index) index_of "$(default_entry)" ;;
    --default-title) field "$(default_entry)" title ;;
    --set-default) set_default "$(select_entries "$target" | head -n 1)" ;;
    --set-default-index) set_default "$(sorted | sed -n "$((target + 1))p")" ;;
    --info)
        found=$(select_entries "$target")
        [ -n "$found" ] || stub_die "The param $target is incorrect"
        info $found ;;
    --update-kernel)
        found=$(select_entries "$target")
        [ -n "$found" ] || stub_die "The param $target is incorrect"
        for f in $found; do update "$f"; done ;;
    *) stub_die "nothing to do" ;;
esac
"""

_RPM = r"""
db=/var/lib/vmshift-stub/rpm-packages
[ -f "$db" ] || : > "$db"
has() {
    awk -v p="$1" '$1 == p || $2 == p { found = 1 } END { exit !found }' "$db"
}
mode=$1
[ $# -gt 0 ] && shift
case $mode in
    -e|--erase)
        names=
        for a in "$@"; do
            case $a in
                --nodeps|--noscripts|--notriggers|--allmatches|--test) ;;
                -*) stub_die "unknown option $a" ;;
                *) names="$names $a" ;;
            esac
        done
        [ -n "$names" ] || stub_die "no packages given for erase"
        status=0
        for n in $names; do
            has "$n" || { echo "error: package $n is not installed" >&2; status=1; }
        done
        [ $status = 0 ] || exit 1
        N="$names " awk '
            BEGIN { n = ENVIRON["N"] }
            !index(n, " " $1 " ") && !index(n, " " $2 " ")' "$db" > "$db.stub-tmp" \
            && mv -f "$db.stub-tmp" "$db" ;;
    -ql)
        # A kernel package's files, as virt-v2v asks for them (NAME-VERSION-RELEASE, no arch).
        for n in "$@"; do
            v=${n#kernel-core-}; v=${v#kernel-modules-}
            case $n in
                kernel-core-*)
                    ls -d /boot/vmlinuz-$v* /boot/config-$v* /boot/System.map-$v*
                    find /lib/modules/$v* ;;
                kernel-modules-*) find /lib/modules/$v*/kernel ;;
                *) has "$n" || { echo "package $n is not installed"; exit 1; } ;;
            esac
        done ;;
    -qa) awk '{ print $2 }' "$db" ;;
    -q|--query)
        [ "$1" = -a ] || [ "$1" = --all ] && { awk '{ print $2 }' "$db"; exit 0; }
        status=0
        for n in "$@"; do
            case $n in -*) stub_die "unknown query option $n" ;; esac
            if has "$n"; then
                awk -v p="$n" '$1 == p || $2 == p { print $2 }' "$db"
            else
                echo "package $n is not installed"; status=1
            fi
        done
        exit $status ;;
    *) stub_die "unknown mode $mode" ;;
esac
"""

_DPKG = r"""
status=/var/lib/dpkg/status
info=/var/lib/dpkg/info
action= pkgs=
for a in "$@"; do
    case $a in
        -P|--purge) action=purge ;;
        -r|--remove) action=remove ;;
        -s|--status) action=status ;;
        -l|--list) action=list ;;
        -L|--listfiles) action=listfiles ;;
        --force-*|--no-triggers|--auto-deconfigure|--refuse-*|--no-debsig) ;;
        -*) stub_die "unknown option $a" ;;
        *) pkgs="$pkgs ${a%%:*}" ;;
    esac
done

stanza() {
    awk -v p="$1" 'BEGIN { RS = "" } $1 == "Package:" && $2 == p { print; exit }' "$status"
}
version_of() {
    stanza "$1" | sed -n 's/^Version: //p'
}

case $action in
    purge|remove)
        found=
        for p in $pkgs; do
            if [ -z "$(stanza "$p")" ]; then
                echo "dpkg: warning: ignoring request to remove $p which isn't installed" >&2
                continue
            fi
            v=$(version_of "$p")
            echo "Removing $p ($v) ..."
            [ $action = purge ] && echo "Purging configuration files for $p ($v) ..."
            if [ -f "$info/$p.list" ]; then
                while read -r f; do
                    if [ -f "$f" ] || [ -L "$f" ]; then rm -f "$f"; fi
                done < "$info/$p.list"
            fi
            if [ $action = purge ]; then
                rm -f "$info/$p".*
            else
                rm -f "$info/$p.list" "$info/$p.md5sums"
            fi
            found="$found $p"
        done
        P="$found " M=$action awk '
            BEGIN { RS = ""; ORS = "\n\n" }
            {
                name = $0; sub(/^Package: /, "", name); sub(/\n.*/, "", name)
                if (!index(ENVIRON["P"], " " name " ")) { print; next }
                if (ENVIRON["M"] == "remove" && $0 ~ /\nConffiles:/) {
                    sub(/\nStatus: [^\n]*/, "\nStatus: deinstall ok config-files"); print
                }
            }' "$status" > "$status.stub-tmp" && mv -f "$status.stub-tmp" "$status" ;;
    status)
        rc=0
        for p in $pkgs; do
            s=$(stanza "$p")
            if [ -n "$s" ]; then
                printf '%s\n\n' "$s"
            else
                echo "dpkg-query: package '$p' is not installed and no information is available" >&2
                rc=1
            fi
        done
        exit $rc ;;
    list)
        awk 'BEGIN { RS = "" }
            {
                n = split($0, l, "\n"); name = ver = arch = desc = ""; st = "ii"
                for (i = 1; i <= n; i++) {
                    if (l[i] ~ /^Package: /) name = substr(l[i], 10)
                    else if (l[i] ~ /^Version: /) ver = substr(l[i], 10)
                    else if (l[i] ~ /^Architecture: /) arch = substr(l[i], 15)
                    else if (l[i] ~ /^Description: /) desc = substr(l[i], 14)
                    else if (l[i] ~ /^Status: deinstall/) st = "rc"
                }
                printf "%s  %s %s %s %s\n", st, name, ver, arch, desc
            }' "$status" ;;
    listfiles)
        for p in $pkgs; do
            [ -f "$info/$p.list" ] || stub_die "package '$p' is not installed"
            cat "$info/$p.list"
        done ;;
    *) stub_die "nothing to do" ;;
esac
"""
