/*
 * kvmtrace's native kernels: the three loops of reading a trace.dat that numpy can only do in
 * many passes. Plain C99, no Python headers: loaded with ctypes (kvmtrace/ingest/native.py),
 * which releases the GIL during each call, so CPUs and event types run on parallel threads.
 *
 *   kt_walk     the record framing of every ring-buffer page of one CPU (ts, payload, length,
 *               common header)
 *   kt_merge    the per-CPU streams merged into global time order
 *   kt_scatter  every event copied into its type's columns (keys and fixed-size fields)
 *
 * Each has a numpy twin with the same results (pages.py, decode.py, fields.py): the tests run
 * both on every capture and compare them.
 */
#include <stdint.h>
#include <string.h>

#define ABI_VERSION 1
#define TYPE_DATA_MAX 28
#define TYPE_PADDING 29
#define TYPE_TIME_EXTEND 30
#define TYPE_TIME_STAMP 31
#define TS_SHIFT 27
#define DELTA_MASK ((1u << 27) - 1)

int32_t kt_abi_version(void) { return ABI_VERSION; }

static int host_is_big(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 0;
}

static inline uint32_t read_u32(const uint8_t *p, int swap) {
    uint32_t v;
    memcpy(&v, p, 4);
    return swap ? __builtin_bswap32(v) : v;
}

/*
 * Walk one CPU's pages, which start at byte `start` of the blob. size[p] is page p's committed data
 * length (0: skip the page), page_ts[p] its header time. Data records go to ts_out/addr_out/len_out
 * (addr: byte offset of the payload from `start`), and when header_out is not NULL, the first 8
 * payload bytes (the common header, read from the blob's last 8 bytes past its end, as the numpy
 * path does) to header_out. A record that runs past its page's data (or cannot advance) stops
 * that page and is noted in bad_out as (page, offset in the page's data, type_len, record length).
 * Returns the number of data records, or -1 when `capacity` is too small.
 */
int64_t kt_walk(const uint8_t *blob, int64_t blob_len, int64_t start, int64_t n_pages, int64_t page_size,
                int64_t data_offset, int32_t big, const int64_t *size, const int64_t *page_ts, int64_t *ts_out,
                uint32_t *addr_out, int16_t *len_out, uint64_t *header_out, int64_t capacity, int64_t *bad_out,
                int64_t bad_capacity, int64_t *n_bad) {
    const uint8_t *data = blob + start;
    const int swap = (big != 0) != host_is_big();
    const int64_t n_words = n_pages * page_size / 4;
    int64_t n = 0;
    *n_bad = 0;
    for (int64_t p = 0; p < n_pages; p++) {
        if (size[p] <= 0)
            continue;
        const int64_t base = p * page_size + data_offset;
        const int64_t limit = base + size[p];
        int64_t at = base;
        uint64_t ts = (uint64_t)page_ts[p];
        for (;;) {
            const uint32_t header = read_u32(data + at, swap);
            const uint32_t type_len = big ? header >> 27 : header & 31;
            const uint32_t delta = big ? header & DELTA_MASK : header >> 5;
            int64_t length = (int64_t)type_len << 2;
            int64_t payload = at + 4;
            int64_t next;
            uint64_t d = delta, new_ts;
            int is_data = 1;
            const int special = type_len == 0 || type_len > TYPE_DATA_MAX;
            if (special) {
                int64_t word = (at >> 2) + 1;
                if (word > n_words - 1)
                    word = n_words - 1;
                const int64_t after = read_u32(data + word * 4, swap);
                int64_t rec;
                if (type_len == 0) { /* a record too long for type_len: its length is the next word */
                    const int64_t big_len = ((after - 4) + 3) & ~(int64_t)3;
                    length = big_len;
                    payload = at + 8;
                    rec = after < 4 ? -1 : 8 + big_len;
                } else {
                    length = 0;
                    rec = type_len == TYPE_PADDING ? 4 + after : 8;
                    is_data = 0;
                }
                const uint64_t extended = ((uint64_t)after << TS_SHIFT) + d;
                if (type_len == TYPE_TIME_EXTEND)
                    d = extended;
                if (type_len == TYPE_TIME_STAMP)
                    d = extended | (ts & ~(((uint64_t)1 << 59) - 1));
                new_ts = type_len == TYPE_TIME_STAMP ? d : ts + d;
                next = at + rec;
            } else {
                new_ts = ts + d;
                next = payload + length;
            }
            if (next > limit || (special && next <= at)) {
                if (*n_bad < bad_capacity) {
                    int64_t *b = bad_out + 4 * *n_bad;
                    b[0] = p;
                    b[1] = at - base;
                    b[2] = type_len;
                    b[3] = next - at;
                }
                (*n_bad)++;
                break;
            }
            if (is_data) {
                if (n >= capacity)
                    return -1;
                ts_out[n] = (int64_t)new_ts;
                addr_out[n] = (uint32_t)payload;
                len_out[n] = (int16_t)length;
                if (header_out) {
                    int64_t h = start + payload;
                    if (h + 8 > blob_len)
                        h = blob_len - 8;
                    memcpy(header_out + n, blob + h, 8);
                }
                n++;
            }
            ts = new_ts;
            if (next >= limit || (type_len == TYPE_PADDING && d == 0))
                break;
            at = next;
        }
    }
    return n;
}

/* The stream with the earliest head wins; ties go to the lower stream number (buffer, then CPU). */
static inline int before(const int64_t *head, int32_t a, int32_t b) {
    return head[a] < head[b] || (head[a] == head[b] && a < b);
}

static void sift_down(int32_t *heap, int32_t size, int32_t i, const int64_t *head) {
    for (;;) {
        int32_t best = i;
        const int32_t l = 2 * i + 1, r = l + 1;
        if (l < size && before(head, heap[l], heap[best]))
            best = l;
        if (r < size && before(head, heap[r], heap[best]))
            best = r;
        if (best == i)
            return;
        const int32_t t = heap[i];
        heap[i] = heap[best];
        heap[best] = t;
        i = best;
    }
}

static inline void copy_value(uint8_t *dst, const uint8_t *src, int32_t size) {
    switch (size) {
    case 1: *dst = *src; break;
    case 2: memcpy(dst, src, 2); break;
    case 4: memcpy(dst, src, 4); break;
    case 8: memcpy(dst, src, 8); break;
    default: memcpy(dst, src, (size_t)size);
    }
}

/*
 * Merge k streams, each already in time order, into one: the same order as a stable sort of
 * their concatenation by time. Writes the merged times, each record's stream number, and n_cols
 * other columns: column c of stream s is col_src[s * n_cols + c] with col_size[c] bytes per value,
 * merged into col_dst[c]. Returns 0, or -1 when a stream is not in time order (nothing written),
 * or -2 when k is over 65535.
 */
int32_t kt_merge(int32_t k, const int64_t *const *ts, const int64_t *count, int64_t *ts_out, uint16_t *stream_out,
                 int32_t n_cols, const int32_t *col_size, const uint8_t *const *col_src, uint8_t *const *col_dst,
                 int32_t *heap, int64_t *pos, int64_t *head) {
    if (k > 65535)
        return -2;
    for (int32_t s = 0; s < k; s++)
        for (int64_t i = 1; i < count[s]; i++)
            if (ts[s][i] < ts[s][i - 1])
                return -1;
    int32_t size = 0;
    for (int32_t s = 0; s < k; s++) {
        pos[s] = 0;
        if (count[s] > 0) {
            head[s] = ts[s][0];
            heap[size++] = s;
        }
    }
    for (int32_t i = size / 2 - 1; i >= 0; i--)
        sift_down(heap, size, i, head);
    int64_t n = 0;
    while (size > 0) {
        const int32_t s = heap[0];
        const int64_t i = pos[s];
        ts_out[n] = ts[s][i];
        stream_out[n] = (uint16_t)s;
        for (int32_t c = 0; c < n_cols; c++)
            copy_value(col_dst[c] + n * col_size[c], col_src[s * n_cols + c] + i * col_size[c], col_size[c]);
        n++;
        if (++pos[s] < count[s]) {
            head[s] = ts[s][pos[s]];
        } else {
            heap[0] = heap[--size];
        }
        sift_down(heap, size, 0, head);
    }
    return 0;
}

/*
 * Copy every event of the types this call owns into its type's columns. slot_of_type[type_id] is
 * the type's slot (-1: not this call's). Per slot: cursor (next row), key columns idx/ts/cpu/pid,
 * optionally the payload address, and fields [field_first, field_first + field_count) each read
 * f_size bytes at payload + f_offset into f_dst at row * f_stride. A record whose fixed part
 * (rec_size bytes) would end past the blob is read from the blob's last rec_size bytes, as the
 * numpy path does.
 */
void kt_scatter(int64_t n, const uint16_t *type_id, const uint32_t *addr, const int64_t *ts, const int32_t *cpu,
                const int32_t *pid, const uint8_t *blob, int64_t blob_len, const int32_t *slot_of_type,
                int32_t n_types, int64_t *cursor, uint32_t *const *idx_out, int64_t *const *ts_out,
                int32_t *const *cpu_out, int32_t *const *pid_out, uint32_t *const *addr_out,
                const int64_t *rec_size, const int32_t *field_first, const int32_t *field_count,
                const int32_t *f_offset, const int32_t *f_size, const int32_t *f_stride, uint8_t *const *f_dst) {
    for (int64_t i = 0; i < n; i++) {
        const uint16_t t = type_id[i];
        if (t >= n_types)
            continue;
        const int32_t s = slot_of_type[t];
        if (s < 0)
            continue;
        const int64_t row = cursor[s]++;
        idx_out[s][row] = (uint32_t)i;
        ts_out[s][row] = ts[i];
        cpu_out[s][row] = cpu[i];
        pid_out[s][row] = pid[i];
        int64_t a = addr[i];
        if (addr_out[s])
            addr_out[s][row] = (uint32_t)a;
        if (a + rec_size[s] > blob_len)
            a = blob_len - rec_size[s] < 0 ? 0 : blob_len - rec_size[s];
        const int32_t last = field_first[s] + field_count[s];
        for (int32_t f = field_first[s]; f < last; f++)
            copy_value(f_dst[f] + row * f_stride[f], blob + a + f_offset[f], f_size[f]);
    }
}
