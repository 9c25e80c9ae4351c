/*
 * TEST-ONLY shim: a stand-in bcryptprimitives.dll for running cross-built
 * Windows test binaries under Wine. It never ships with lanspread.
 *
 * Why: Rust's std on Windows gets its randomness (HashMap keys, etc.) from
 * ProcessPrng in bcryptprimitives.dll, imported at load time. Debian 12's
 * Wine 8.0 has no bcryptprimitives.dll at all, so every Rust program dies
 * before main with "Library bcryptprimitives.dll ... not found" (c0000135).
 * This DLL exports ProcessPrng and forwards to RtlGenRandom
 * (SystemFunction036 in advapi32), which Wine implements.
 *
 * Built and installed into the test-only WINEPREFIX by xtask/src/wine.rs:
 *   x86_64-w64-mingw32-gcc -shared -O2 -s -o bcryptprimitives.dll processprng.c -ladvapi32
 */
#include <windows.h>

/* RtlGenRandom; its real export name is SystemFunction036. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

/* BOOL ProcessPrng(PBYTE pbData, SIZE_T cbData): fills pbData with cbData
 * random bytes. Like the real one it always returns TRUE (Rust's std treats
 * anything else as fatal, so failure aborts loudly instead). */
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk)) {
            /* The real ProcessPrng cannot fail; neither may we return garbage. */
            RaiseFailFastException(NULL, NULL, 0);
        }
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
