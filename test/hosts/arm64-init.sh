#!/bin/sh
# /init of the arm64 real-KVM test host (the "L1"), run by busybox sh as PID 1.
#
# The base initramfs (built by arm64-image.sh) holds busybox (only /bin/sh is
# linked; the other applets are linked here), node, its libraries, optional
# modules and this script. A second cpio archive appended per run (built by
# run.ts) adds:
#   /work/project/   package.json, dist/, node_modules/ (plus koffi's arm64
#                    build), test/hosts/*.mjs
#   /work/guest/     guest images (optional)
#   /work/env        shell `export` lines for the command's environment
#   /work/cmd        the command to run, as a shell script
# Output goes to the serial console (ttyAMA0, the PL011 of QEMU's virt board).
# Lines the host side parses, as for x86_64:
#   FLINTVM-HOST-READY <uptime-seconds>   just before the command starts
#   FLINTVM-HOST-EXIT <status>            the command's exit status (125: setup failed)

export PATH=/work/bin:/work/project/node_modules/.bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
export TERM=dumb
umask 022

finish() {
	# Let the UART drain before the power goes, or the last line can be cut.
	echo "FLINTVM-HOST-EXIT $1"
	sync
	sleep 0.3
	poweroff -f
	# Not reached; PID 1 must not exit.
	while :; do sleep 1000; done
}

setup_failed() {
	echo "FLINTVM-HOST: $*"
	echo "FLINTVM-HOST: last kernel messages:"
	dmesg 2>/dev/null | tail -n 30 | sed 's/^/FLINTVM-HOST:   /'
	finish 125
}

# Only /bin/sh links to busybox in the image; link the other applets now
# (busybox --install finds itself through /proc/self/exe).
/bin/busybox mount -t proc proc /proc || { echo "FLINTVM-HOST: cannot mount /proc"; echo "FLINTVM-HOST-EXIT 125"; /bin/busybox poweroff -f; }
/bin/busybox --install -s || setup_failed "busybox --install -s failed"
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev || setup_failed "cannot mount devtmpfs on /dev"
mkdir -p /dev/pts /dev/shm /tmp /run /var/tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
ln -sf /proc/self/fd /dev/fd 2>/dev/null
ln -sf /proc/self/fd/0 /dev/stdin 2>/dev/null
ln -sf /proc/self/fd/1 /dev/stdout 2>/dev/null
ln -sf /proc/self/fd/2 /dev/stderr 2>/dev/null

[ -f /work/env ] && . /work/env

# Keep the console stream clean unless asked for a verbose run.
if [ "${FLINTVM_HOST_VERBOSE:-0}" != 1 ]; then
	echo 1 >/proc/sys/kernel/printk 2>/dev/null
fi

hostname flintvm-host 2>/dev/null
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up 2>/dev/null

# KVM is built into Debian's arm64 kernel; it registers /dev/kvm when the CPU
# booted the kernel at EL2 (QEMU -M virt,virtualization=on). Optional modules
# for networking and vsock tests are loaded best-effort.
for m in tun tap vsock vmw_vsock_virtio_transport_common vhost_iotlb vhost vhost_vsock vhost_net; do
	[ -f /lib/modules/flintvm/$m.ko ] && insmod /lib/modules/flintvm/$m.ko >/dev/null 2>&1
done

i=0
while [ ! -c /dev/kvm ] && [ $i -lt 20 ]; do
	sleep 0.1
	i=$((i + 1))
done
if [ ! -c /dev/kvm ]; then
	setup_failed "no /dev/kvm inside the test host (the kernel did not start at EL2? QEMU needs -M virt,virtualization=on; kernel: $(dmesg 2>/dev/null | grep -i 'kvm' | tail -n 3 | tr '\n' ' '))"
fi
chmod 666 /dev/kvm
[ -c /dev/net/tun ] && chmod 666 /dev/net/tun
[ -c /dev/vhost-vsock ] && chmod 666 /dev/vhost-vsock

[ -f /work/cmd ] || setup_failed "/work/cmd is missing (the per-run overlay was not loaded)"
[ -d /work/project ] || setup_failed "/work/project is missing (the per-run overlay was not loaded)"

mkdir -p /work/bin
cat >/work/bin/flintvm <<'EOF'
#!/bin/sh
exec node /work/project/dist/bin/flintvm.js "$@"
EOF
chmod 755 /work/bin/flintvm

cd /work/project || setup_failed "cannot cd to /work/project"
read -r up _ </proc/uptime
echo "FLINTVM-HOST-READY $up"
sh /work/cmd </dev/null 2>&1
finish $?
