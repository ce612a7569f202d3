/*
 * kvmtrace's native kernels: the three loops of reading a trace.dat that numpy can only do in
 * many passes. Plain C99, no Python headers: loaded with ctypes (kvmtrace/ingest/native.py),
 * which releases the GIL during each call, so CPUs and event types run on parallel threads.
 *
 *   kt_walk            the record framing of every ring-buffer page of one CPU (ts, payload,
 *                      length, common header)
 *   kt_merge_scatter   the per-CPU streams merged into global time order, each record written to
 *                      the common columns and copied into its type's columns (keys, fixed fields)
 *   kt_type_max_len    the longest record of each type (fields are read only inside records)
 *   kt_dynamic_spans   where each record's __data_loc / __rel_loc field points, cut to the record
 *   kt_gather_spans    the bytes of many spans, one after another (array fields of any length)
 *
 * Each has a numpy twin with the same results (pages.py, decode.py, fields.py): the tests run
 * both on every capture and compare them.
 */
#include <stdint.h>
#include <string.h>

#define ABI_VERSION 3
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
 * (addr: byte offset of the payload from `start`), and when type_out is not NULL, the standard
 * 8-byte common header (type u16, flags u8, preempt u8, pid s32, in host byte order; read from
 * the blob's last 8 bytes past its end, as the numpy path does) to type/flags/preempt/pid_out. A record that runs past its page's data (or cannot advance) stops
 * that page and is noted in bad_out as (page, offset in the page's data, type_len, record length).
 * Returns the number of data records, or -1 when `capacity` is too small.
 */
int64_t kt_walk(const uint8_t *blob, int64_t blob_len, int64_t start, int64_t n_pages, int64_t page_size,
                int64_t data_offset, int32_t big, const int64_t *size, const int64_t *page_ts, int64_t *ts_out,
                uint32_t *addr_out, int16_t *len_out, uint16_t *type_out, uint8_t *flags_out,
                uint8_t *preempt_out, int32_t *pid_out, int64_t capacity, int64_t *bad_out, int64_t bad_capacity,
                int64_t *n_bad) {
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
            if (next > limit || (special && (next <= at || (next & 3)))) {
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
                if (type_out) {
                    int64_t h = start + payload;
                    if (h + 8 > blob_len)
                        h = blob_len - 8;
                    uint16_t type;
                    uint32_t pid;
                    memcpy(&type, blob + h, 2);
                    memcpy(&pid, blob + h + 4, 4);
                    type_out[n] = swap ? __builtin_bswap16(type) : type;
                    flags_out[n] = blob[h + 2];
                    preempt_out[n] = blob[h + 3];
                    pid_out[n] = (int32_t)(swap ? __builtin_bswap32(pid) : pid);
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

/* Each record's field bytes inside the record (have bytes from off on), zeros past its end. */
static inline void copy_inside(uint8_t *dst, const uint8_t *src, int32_t size, int64_t have) {
    const int64_t n = have < 0 ? 0 : (have < size ? have : size);
    if (n > 0)
        memcpy(dst, src, (size_t)n);
    if (n < size)
        memset(dst + n, 0, (size_t)(size - n));
}

/* max_len[t] = the longest payload of the n records of type t < n_types (raised, never lowered). */
void kt_type_max_len(const uint16_t *type, const int16_t *len, int64_t n, int64_t n_types, int64_t *max_len) {
    for (int64_t i = 0; i < n; i++) {
        const uint16_t t = type[i];
        if (t < n_types && len[i] > max_len[t])
            max_len[t] = len[i];
    }
}

/*
 * A dynamic field (u32 at `field_offset`: byte offset in the low 16 bits, length in the high 16) of each
 * record at payload[i] of len[i] bytes, in one pass: start[i] the blob address its bytes begin at
 * (from the payload, or for __rel_loc from the end of the field), span[i] how many of them lie inside
 * the record. A record too short for the field reads it as 0. Returns how many spans were cut.
 * The numpy twin is fields._dynamic_field.
 */
int64_t kt_dynamic_spans(const uint8_t *blob, int64_t blob_len, const uint32_t *payload, const int32_t *len,
                         int64_t n, int64_t field_offset, int32_t rel_loc, int32_t swap, int64_t *start,
                         int64_t *span) {
    int64_t cut = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t at = (int64_t)payload[i];
        const int64_t end = at + len[i];
        uint32_t loc = 0;
        if (len[i] >= field_offset + 4 && at + field_offset + 4 <= blob_len)
            loc = read_u32(blob + at + field_offset, swap);
        const int64_t want = loc >> 16;
        const int64_t from = at + (loc & 0xFFFF) + (rel_loc ? field_offset + 4 : 0);
        int64_t inside = (from + want < end ? from + want : end) - from;
        if (inside < 0)
            inside = 0;
        start[i] = from;
        span[i] = inside;
        cut += inside != want;
    }
    return cut;
}

/* The bytes blob[start[i] : start[i] + nbytes[i]] of every span, one after another in out (sized to their
 * sum). The spans lie inside the blob (the callers cut them to their records). */
void kt_gather_spans(const uint8_t *blob, const int64_t *start, const int64_t *nbytes, int64_t n, uint8_t *out) {
    for (int64_t i = 0; i < n; i++) {
        memcpy(out, blob + start[i], (size_t)nbytes[i]);
        out += nbytes[i];
    }
}

/* The inputs and outputs of kt_merge_scatter (one time part of the merge). */
typedef struct {
    /* per stream s < k: this part's records, in time order */
    int32_t k;
    const int64_t *const *ts;
    const int64_t *count;
    const uint32_t *const *addr; /* payload address in the blob */
    const int16_t *const *len;
    const uint16_t *const *type;
    const uint8_t *const *flags;
    const uint8_t *const *preempt;
    const int32_t *const *pid;
    const int32_t *stream_cpu;
    /* the common columns, from this part's first row (global row first_row) */
    int64_t first_row;
    int64_t *ts_out;
    int32_t *cpu_out;
    uint16_t *stream_out; /* may be NULL */
    uint8_t *flags_out;
    uint8_t *preempt_out;
    int32_t *pid_out;
    /* category codes: the event name's code_of_type[type] (type < n_types below), the comm's
     * code_of_pid[pid] (0 for a pid outside [0, n_pids)) */
    uint32_t *event_out;
    const uint32_t *event_code_of_type;
    uint32_t *comm_out;
    const uint32_t *comm_code_of_pid;
    int64_t n_pids;
    /* the typed columns: slot_of_type[type] (-1: none), per slot its next row in this part */
    const uint8_t *blob;
    int64_t blob_len;
    const int32_t *slot_of_type;
    int32_t n_types;
    int64_t *cursor;
    uint32_t *const *idx_out;
    int64_t *const *slot_ts;
    int32_t *const *slot_cpu;
    int32_t *const *slot_pid;
    uint32_t *const *slot_addr; /* entries may be NULL */
    int16_t *const *slot_len;   /* entries may be NULL */
    const int64_t *rec_size;    /* per slot: bytes of the fixed part read */
    int64_t *short_count;       /* per slot: records shorter than rec_size (their bytes past the end read 0) */
    const int32_t *field_first; /* per slot: its fields [first, first + count) */
    const int32_t *field_count;
    const int32_t *f_offset; /* per field: f_size bytes at payload + f_offset go to f_dst + row * f_stride */
    const int32_t *f_size;
    const int32_t *f_stride;
    uint8_t *const *f_dst;
    /* work space, k entries each */
    int32_t *heap;
    int64_t *pos;
    int64_t *head;
} MergeScatter;

/*
 * Merge the k streams of one time part, each in time order, into one (the order of a stable sort
 * of their concatenation by time: ties go to the lower stream), writing each record's common
 * columns and copying it into its type's columns. Returns 0, or -1 when a stream is not in time
 * order (then nothing is written).
 */
int32_t kt_merge_scatter(const MergeScatter *m) {
    /* Everything in locals: the field copies store through uint8_t pointers, which may alias
     * anything, so values read through `m` would be reloaded after every copy. */
    const int32_t k = m->k;
    const int64_t *const *const ts = m->ts;
    const int64_t *const count = m->count;
    const uint32_t *const *const addr = m->addr;
    const int16_t *const *const len = m->len;
    const uint16_t *const *const type = m->type;
    const uint8_t *const *const flags = m->flags;
    const uint8_t *const *const preempt = m->preempt;
    const int32_t *const *const pid = m->pid;
    const int32_t *const stream_cpu = m->stream_cpu;
    int64_t *const ts_out = m->ts_out;
    int32_t *const cpu_out = m->cpu_out;
    uint16_t *const stream_out = m->stream_out;
    uint32_t *const event_out = m->event_out, *const comm_out = m->comm_out;
    const uint32_t *const event_code_of_type = m->event_code_of_type, *const comm_code_of_pid = m->comm_code_of_pid;
    const int64_t n_pids = m->n_pids;
    uint8_t *const flags_out = m->flags_out;
    uint8_t *const preempt_out = m->preempt_out;
    int32_t *const pid_out = m->pid_out;
    const uint8_t *const blob = m->blob;
    const int64_t blob_len = m->blob_len;
    const int32_t *const slot_of_type = m->slot_of_type;
    const int32_t n_types = m->n_types;
    int64_t *const cursor = m->cursor;
    const int32_t *const field_first = m->field_first, *const field_count = m->field_count;
    const int32_t *const f_offset = m->f_offset, *const f_size = m->f_size, *const f_stride = m->f_stride;
    uint8_t *const *const f_dst = m->f_dst;
    int32_t *const heap = m->heap;
    int64_t *const pos = m->pos, *const head = m->head;
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
    for (int64_t n = 0; size > 0; n++) {
        const int32_t s = heap[0];
        const int64_t i = pos[s];
        const int64_t t_ns = ts[s][i];
        const uint16_t t = type[s][i];
        const int32_t p = pid[s][i];
        ts_out[n] = t_ns;
        cpu_out[n] = stream_cpu[s];
        if (stream_out)
            stream_out[n] = (uint16_t)s;
        event_out[n] = t < n_types ? event_code_of_type[t] : 0;
        comm_out[n] = p >= 0 && p < n_pids ? comm_code_of_pid[p] : 0;
        flags_out[n] = flags[s][i];
        preempt_out[n] = preempt[s][i];
        pid_out[n] = p;
        const int32_t slot = t < n_types ? slot_of_type[t] : -1;
        if (slot >= 0) {
            const int64_t r = cursor[slot]++;
            m->idx_out[slot][r] = (uint32_t)(m->first_row + n);
            m->slot_ts[slot][r] = t_ns;
            m->slot_cpu[slot][r] = stream_cpu[s];
            m->slot_pid[slot][r] = p;
            int64_t a = addr[s][i];
            if (m->slot_addr[slot])
                m->slot_addr[slot][r] = (uint32_t)a;
            if (m->slot_len[slot])
                m->slot_len[slot][r] = len[s][i];
            const int64_t rec = m->rec_size[slot], have = len[s][i];
            const int32_t last = field_first[slot] + field_count[slot];
            if (have >= rec && a + rec <= blob_len) {
                for (int32_t f = field_first[slot]; f < last; f++)
                    copy_value(f_dst[f] + r * f_stride[f], blob + a + f_offset[f], f_size[f]);
            } else { /* a record shorter than its format: only its own bytes */
                const int64_t inside = a + have <= blob_len ? have : blob_len - a;
                m->short_count[slot]++;
                for (int32_t f = field_first[slot]; f < last; f++)
                    copy_inside(f_dst[f] + r * f_stride[f], blob + a + f_offset[f], f_size[f], inside - f_offset[f]);
            }
        }
        if (++pos[s] < count[s]) {
            head[s] = ts[s][pos[s]];
        } else {
            heap[0] = heap[--size];
        }
        sift_down(heap, size, 0, head);
    }
    return 0;
}
