/* The arm64 Python of the aarch64 tests: Debian's libpython3.11:arm64 behind a main().
 *
 * Debian's python3.11:arm64 cannot be installed beside the amd64 one (both own
 * /usr/bin/python3.11), but its runtime library can (Multi-Arch: same), and the
 * interpreter binary is nothing more than this call. scripts/setup.sh --aarch64
 * cross-compiles it into .venvs/aarch64/bin/python3.11; qemu-aarch64 runs it. */
extern int Py_BytesMain(int argc, char **argv);

int main(int argc, char **argv)
{
    return Py_BytesMain(argc, argv);
}
