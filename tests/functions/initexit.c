/* initexit: exits at once. As the /init of a test microVM image (BUILD/vm/panic.initramfs)
 * it makes the guest kernel panic ("Attempted to kill init"), which must end QEMU (panic=-1,
 * reboot=t, -no-reboot) and fail the instance like any other exit. */
int main(void) { return 3; }
