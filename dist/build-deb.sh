#!/usr/bin/env bash
# Builds appwall's Debian package with dpkg-deb, without cargo-deb (which
# takes minutes to install). The file list, dependencies and conffiles come
# from Cargo.toml's [package.metadata.deb], the table `cargo deb` reads, so
# both build the same package.
#
#   dist/build-deb.sh                 # cargo build --release, then package
#   APPWALL_BIN=path dist/build-deb.sh   # package this binary instead
#
# Prints the path of the .deb (target/debian/appwall_VERSION-1_ARCH.deb).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}

bin=${APPWALL_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --locked >&2
  bin=$target/release/appwall
fi
[ -x "$bin" ] || { echo "build-deb: no binary at $bin" >&2; exit 1; }

arch=$(dpkg --print-architecture)
stage=$(mktemp -d "${TMPDIR:-/tmp}/appwall-deb.XXXXXX")
chmod 755 "$stage"
trap 'rm -rf "$stage"' EXIT

# Stage the assets, write DEBIAN/control and DEBIAN/conffiles.
debname=$(python3 - "$root" "$stage" "$bin" "$arch" <<'PY'
import glob, gzip, os, re, shutil, subprocess, sys, tomllib

root, stage, binary, arch = sys.argv[1:5]
with open(os.path.join(root, "Cargo.toml"), "rb") as f:
    cargo = tomllib.load(f)
pkg = cargo["package"]
deb = pkg["metadata"]["deb"]

def put(src, dest, mode):
    path = os.path.join(stage, dest)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Debian keeps man pages gzipped (reproducibly: no name, no time).
    if dest.startswith("usr/share/man/"):
        path += ".gz"
        with open(src, "rb") as i, open(path, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as o:
                o.write(i.read())
    elif dest.startswith("usr/bin/"):
        # As cargo-deb does: no debug info in the package.
        subprocess.run(["strip", "--strip-unneeded", "-o", path, src], check=True)
    else:
        shutil.copyfile(src, path)
    os.chmod(path, int(mode, 8))

for src, dest, mode in deb["assets"]:
    if src == "target/release/appwall":
        sources = [binary]
    else:
        sources = sorted(glob.glob(os.path.join(root, src)))
        if not sources:
            sys.exit(f"build-deb: asset {src} matches nothing")
    for s in sources:
        put(s, dest + os.path.basename(s) if dest.endswith("/") else dest, mode)

# The unit, where cargo-deb's systemd-units puts it.
unit_dir = deb["systemd-units"]["unit-scripts"]
name = deb["systemd-units"]["unit-name"]
put(os.path.join(root, unit_dir, f"{name}.service"), f"usr/lib/systemd/system/{name}.service", "644")
# The copyright file Debian wants, from LICENSE (cargo-deb does the same).
copyright_path = os.path.join(stage, "usr/share/doc", pkg["name"], "copyright")
with open(os.path.join(root, "LICENSE")) as lic, open(copyright_path, "w") as out:
    out.write(f"Files: *\nCopyright: {deb['copyright']}\nLicense: {pkg['license']}\n\n" + lic.read())

# $auto: the C library version the binary needs (what dpkg-shlibdeps finds).
need = "libc6"
try:
    syms = subprocess.run(["objdump", "-T", binary], capture_output=True, text=True, check=True).stdout
    versions = {tuple(int(x) for x in v.split("."))
                for v in re.findall(r"GLIBC_([0-9]+(?:\.[0-9]+)*)", syms)}
    if versions:
        need = "libc6 (>= %s)" % ".".join(map(str, max(versions)))
except (OSError, subprocess.CalledProcessError):
    pass
depends = deb["depends"].replace("$auto", need)

size_kib = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(stage) for f in fs) // 1024 + 1
desc = pkg["description"]
long = " ".join(deb["extended-description"].split())
control = f"""Package: {pkg['name']}
Version: {pkg['version']}-1
Architecture: {arch}
Maintainer: {deb['maintainer']}
Installed-Size: {size_kib}
Depends: {depends}
Recommends: {deb.get('recommends', '')}
Section: {deb['section']}
Priority: {deb['priority']}
Description: {desc}
 {long}
"""
os.makedirs(os.path.join(stage, "DEBIAN"))
with open(os.path.join(stage, "DEBIAN", "control"), "w") as f:
    f.write(control)
with open(os.path.join(stage, "DEBIAN", "conffiles"), "w") as f:
    f.write("".join(c + "\n" for c in deb["conf-files"]))
print(f"{pkg['name']}_{pkg['version']}-1_{arch}.deb")
PY
)

# Maintainer scripts: ours, with the systemd handling cargo-deb would insert
# at #DEBHELPER# (no enable or start on install, as the metadata says).
snippet() {
  case "$1" in
    postinst) cat <<'EOF'
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null || true
    if [ -n "$2" ]; then
        systemctl try-restart appwall.service >/dev/null || true
    fi
fi
EOF
    ;;
    prerm) cat <<'EOF'
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop appwall.service >/dev/null || true
fi
EOF
    ;;
    postrm) cat <<'EOF'
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null || true
fi
EOF
    ;;
  esac
}
for s in postinst prerm postrm; do
  while IFS= read -r line; do
    if [ "$line" = "#DEBHELPER#" ]; then snippet "$s"; else printf '%s\n' "$line"; fi
  done < "dist/debian/$s" > "$stage/DEBIAN/$s"
  chmod 755 "$stage/DEBIAN/$s"
done

mkdir -p "$target/debian"
out=$target/debian/$debname
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >&2
echo "$out"
