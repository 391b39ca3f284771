/*
 * The C ABI of rclone's librclone, as msync relies on it.
 *
 * This is msync's own statement of the contract that both its vendored shim
 * (vendor/librclone) and an upstream librclone.so fulfil. build.rs turns it
 * into Rust bindings with bindgen; nothing else may be assumed of the library.
 */
#ifndef MSYNC_LIBRCLONE_H
#define MSYNC_LIBRCLONE_H

/* The answer of one RC call: a JSON document and an HTTP-like status. */
struct RcloneRPCResult {
    /* NUL-terminated JSON, owned by the library: release with RcloneFreeString. */
    char *Output;
    /* 200 on success, 4xx/5xx as rclone's rc server would answer. */
    int Status;
};

/* Prepares the library; call once, before any other function. */
void RcloneInitialize(void);

/* Releases the library's resources; call once, after the last call. */
void RcloneFinalize(void);

/* Runs RC method `method` with the JSON object `input`. Thread-safe. */
struct RcloneRPCResult RcloneRPC(char *method, char *input);

/* Frees an Output returned by RcloneRPC. */
void RcloneFreeString(char *str);

#endif
