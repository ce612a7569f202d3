/*
 * kvmtrace's native kernels for the text reader (``trace-cmd report -R`` payloads). Plain C99, no
 * Python headers: compiled into one library with tracedat/kernels.c and loaded with ctypes (native.py).
 *
 *   kt_text_fields the values of ``k1=v1 k2=v2 ...`` payloads split (raw.split) and their
 *                  integers read (raw.parse_ints, typed._int_column) in one pass
 *   kt_text_pack   the payloads of the text copied into one block per event type, in one pass
 *   kt_text_layout the line prefixes in the file's dominant column layout (modal._parse_block)
 *   kt_text_modal_codes, kt_text_modal_fill  the rest of _parse_layout: key codes, then the columns
 *   kt_text_lines, kt_text_lines_part  where each line starts and ends (bytetext.line_bounds)
 *   kt_text_group, kt_text_pack_codes  the rows of each event type and their payloads packed (text.py)
 *   kt_text_open_gaps, kt_text_move  rows moved in place (text._merged_in_place, modal)
 *   kt_text_intern  codes of short strings (bytetext.intern)
 *
 * Each has a numpy twin with the same results (raw.py, typed.py): the tests read every
 * text with both engines and compare the tables.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SPLIT_SPANS 0
#define SPLIT_UNSURE 1
#define SPLIT_NO_MATCH 2
#define FIELD_DEC 0
#define FIELD_HEX 1
#define FIELD_SPANS 2
#define FIELD_SKIP 3

static int is_space(uint8_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static int digit_value(uint8_t c, int base16) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (base16 && ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
        return (c | 0x20) - 'a' + 10;
    return -1;
}

/*
 * Read `' '* '-'? ('0x')? digits` in [p, e) of buf (raw.parse_ints): hex when the text has 0x or
 * base16, at most 16 hex / 19 decimal digits. Returns 0 where the value is in another form, else 1
 * with the value, negated (two's complement) when it has a '-'.
 */
static int read_int(const uint8_t *buf, int64_t p, int64_t e, int base16, uint64_t *value) {
    if (e - p < 1)
        return 0;
    while (p < e && buf[p] == ' ')
        p++;
    const int neg = p < e && buf[p] == '-';
    p += neg;
    const int has0x = e - p >= 3 && buf[p] == '0' && (buf[p + 1] | 0x20) == 'x';
    p += 2 * has0x;
    base16 |= has0x;
    const int64_t size = e - p;
    if (size < 1 || size > (base16 ? 16 : 19))
        return 0;
    uint64_t v = 0;
    for (; p < e; p++) {
        const int d = digit_value(buf[p], base16);
        if (d < 0)
            return 0;
        v = base16 ? (v << 4) | (uint64_t)d : v * 10 + (uint64_t)d;
    }
    *value = neg ? (uint64_t)0 - v : v;
    return 1;
}

/* Field j of kt_text_fields at row i: its value in [vs, ve) read and stored as kind[j] says. */
static void store_field(const uint8_t *buf, int64_t i, int32_t j, int64_t vs, int64_t ve, const int32_t *kind,
                        const int32_t *bits, const int32_t *width, const uint64_t *out_a, const uint64_t *out_b,
                        int64_t *bad, int64_t cap, int64_t *nbad) {
    const int32_t k = kind[j];
    if (k == FIELD_SPANS) {
        ((int64_t *)(uintptr_t)out_a[j])[i] = vs;
        ((int64_t *)(uintptr_t)out_b[j])[i] = ve;
        return;
    }
    if (k == FIELD_SKIP)
        return;
    uint64_t v = 0;
    if (!read_int(buf, vs, ve, k == FIELD_HEX, &v)) {
        if (*nbad < cap) {
            int64_t *b = bad + 4 * *nbad;
            b[0] = j;
            b[1] = i;
            b[2] = vs;
            b[3] = ve;
        }
        (*nbad)++;
        v = 0;
    }
    const int32_t nbits = bits[j] < 0 ? -bits[j] : bits[j];
    if (nbits < 64) {
        v &= ((uint64_t)1 << nbits) - 1;
        if (bits[j] < 0 && (v >> (nbits - 1)) & 1) /* signed: the sign bit extended */
            v |= ~(((uint64_t)1 << nbits) - 1);
    }
    void *to = (void *)(uintptr_t)out_a[j];
    switch (width[j]) {
    case 1:
        ((uint8_t *)to)[i] = (uint8_t)v;
        break;
    case 2:
        ((uint16_t *)to)[i] = (uint16_t)v;
        break;
    case 4:
        ((uint32_t *)to)[i] = (uint32_t)v;
        break;
    default:
        ((uint64_t *)to)[i] = v;
    }
}

/*
 * raw.split and the reading of the values in one pass (typed._typed's integer columns),
 * for n payloads [ps[i], pe[i]) of buf and nkeys keys (key j: the bytes keys[key_off[j]:key_off[j+1]]).
 * The j-th key's '=' is the j-th '=' of the payload; the first key must start the payload, the
 * others follow a space; the last value loses trailing whitespace. Per field j, kind[j]:
 *   FIELD_DEC, FIELD_HEX  an integer (hex by default with FIELD_HEX) as raw.parse_ints reads it,
 *       negated with its '-', cut to |bits[j]| bits (sign-extended when bits[j] < 0; 64: kept whole)
 *       and stored in width[j] bytes (1, 2, 4, 8) at row i of the array at address out_a[j]; where
 *       it is in another form, 0 is stored and (j, i, vs, ve) goes to bad (the first cap of them;
 *       *nbad counts them all)
 *   FIELD_SPANS  the value's span to the int64 arrays at out_a[j] (starts) and out_b[j] (ends)
 *   FIELD_SKIP   nothing
 * Returns SPLIT_SPANS; SPLIT_NO_MATCH when some payload has fewer '=' than keys, or does not start
 * with the first key (and none of those starts with C, < or [); SPLIT_UNSURE otherwise when some
 * line does not split (a name before an '=' differs, or a value ends before it starts). The outputs
 * are complete only with SPLIT_SPANS.
 */
int32_t kt_text_fields(const uint8_t *buf, int64_t n, const int64_t *ps, const int64_t *pe, int32_t nkeys,
                       const uint8_t *keys, const int64_t *key_off, const int32_t *kind, const int32_t *bits,
                       const int32_t *width, const uint64_t *out_a, const uint64_t *out_b, int64_t *bad, int64_t cap,
                       int64_t *nbad) {
    int is_short = 0, head_fail = 0, head_odd = 0, name_fail = 0, backwards = 0;
    *nbad = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t p = ps[i], e = pe[i];
        int64_t q = p, start = 0;
        int32_t found = 0;
        while (found < nkeys && q < e) {
            const uint8_t *hit = memchr(buf + q, '=', (size_t)(e - q));
            if (hit == NULL)
                break;
            const int64_t eq = hit - buf;
            const int64_t len = key_off[found + 1] - key_off[found];
            const uint8_t *key = keys + key_off[found];
            if (found == 0) {
                if (eq != p + len || memcmp(buf + p, key, (size_t)len) != 0) {
                    head_fail = 1;
                    head_odd |= buf[p] == 'C' || buf[p] == '<' || buf[p] == '[';
                }
            } else {
                if (eq - len - 1 < 0 || buf[eq - len - 1] != ' ' || memcmp(buf + eq - len, key, (size_t)len) != 0)
                    name_fail = 1;
                const int64_t end = eq - len - 1;
                backwards |= end < start;
                store_field(buf, i, found - 1, start, end, kind, bits, width, out_a, out_b, bad, cap, nbad);
            }
            start = eq + 1;
            found++;
            q = eq + 1;
        }
        if (found < nkeys) {
            is_short = 1;
            continue;
        }
        int64_t last = e;
        while (last > start && is_space(buf[last - 1]))
            last--;
        backwards |= last < start;
        store_field(buf, i, nkeys - 1, start, last, kind, bits, width, out_a, out_b, bad, cap, nbad);
    }
    if (is_short)
        return SPLIT_NO_MATCH;
    if (head_fail)
        return head_odd ? SPLIT_UNSURE : SPLIT_NO_MATCH;
    return (name_fail || backwards) ? SPLIT_UNSURE : SPLIT_SPANS;
}

/*
 * Copy the payloads [ps[i], pe[i]) of buf, in line order, to out + dest[i] (rows with dest[i] < 0
 * are left out): one pass in the order of the text, so that each event type's payloads can then be
 * read from one small contiguous block.
 */
void kt_text_pack(const uint8_t *buf, int64_t n, const int64_t *ps, const int64_t *pe, const int64_t *dest,
                  uint8_t *out) {
    for (int64_t i = 0; i < n; i++) {
        if (dest[i] >= 0 && pe[i] > ps[i])
            memcpy(out + dest[i], buf + ps[i], (size_t)(pe[i] - ps[i]));
    }
}

#define KEY2 24 /* modal.KEY2 */
#define MUL1 0x9E3779B97F4A7C15ull
#define MUL2 0xBF58476D1CE4E5B9ull

static uint64_t load_le(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    const uint16_t one = 1;
    return *(const uint8_t *)&one ? v : __builtin_bswap64(v);
}

static int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

#define MAX_TS_SECONDS 9223372036LL /* limits.MAX_TS_SECONDS: the ns of smaller seconds fit int64 */

/* The seconds between ']' and '.': one space or more, then at most 10 digits up to the '.', below
 * MAX_TS_SECONDS. -1 when not so. */
static int64_t layout_seconds(const uint8_t *p, int64_t size) {
    if (size < 2 || p[0] != ' ' || !is_digit(p[size - 1]))
        return -1;
    int64_t v = 0, k = 0;
    while (p[k] == ' ')
        k++;
    if (size - k > 10)
        return -1;
    for (; k < size; k++) {
        if (!is_digit(p[k]))
            return -1;
        v = v * 10 + (p[k] - '0');
    }
    return v < MAX_TS_SECONDS ? v : -1;
}

/*
 * modal._parse_block's per-line work for the lines [starts[i], ends[i]) in the column layout
 * (lb, rb, dot, colon): ok[i] where the line has it (the checks of _parse_block up to the key
 * lookup), its time ts[i] in ns and the hash h[i] of its key (0 where not ok), as modal._codes
 * hashes the key words.
 */
void kt_text_layout(const uint8_t *buf, int64_t nbuf, int64_t n, const int64_t *starts, const int64_t *ends,
                    int32_t lb, int32_t rb, int32_t dot, int32_t colon, int32_t check_cr, uint8_t *ok, int64_t *ts,
                    uint64_t *h) {
    const int64_t width = (colon + 2 + 7) / 8 * 8, ns_off = colon + 2;
    const int64_t frac_len = colon - dot - 1;
    int64_t scale = 1;
    for (int64_t k = frac_len; k < 9; k++)
        scale *= 10;
    const int32_t kwords = (rb + 1 + 7) / 8, tail = (rb + 1) % 8;
    for (int64_t i = 0; i < n; i++) {
        const int64_t s = starts[i], e = ends[i];
        const uint8_t *p = buf + s;
        ok[i] = 0;
        ts[i] = 0;
        h[i] = 0;
        if (e - s < ns_off + 1 || s + ns_off + KEY2 + 16 > nbuf || s + width + 8 > nbuf)
            continue;
        if (p[lb] != '[' || p[rb] != ']' || p[dot] != '.' || p[colon] != ':' || p[colon + 1] != ' ')
            continue;
        const int64_t sec = layout_seconds(p + rb + 1, dot - rb - 1);
        if (sec < 0)
            continue;
        int64_t frac = 0;
        int good = 1;
        for (int64_t k = dot + 1; k < colon; k++) {
            good &= is_digit(p[k]);
            frac = frac * 10 + (p[k] & 15);
        }
        if (!good || (check_cr && buf[e - 1 > 0 ? e - 1 : 0] == '\r'))
            continue;
        uint64_t x = MUL1;
        for (int32_t j = 0; j < kwords + KEY2 / 8; j++) {
            uint64_t w = j < kwords ? load_le(p + 8 * j) : load_le(p + ns_off + 8 * (j - kwords));
            if (j == kwords - 1 && tail)
                w &= (1ull << (8 * tail)) - 1;
            x ^= w;
            x *= MUL2;
            x ^= x >> 29;
        }
        ok[i] = 1;
        ts[i] = sec * 1000000000 + frac * scale;
        h[i] = x;
    }
}

/* The number of '\n' bytes in buf[0:n]. */
int64_t kt_text_count_lines(const uint8_t *buf, int64_t n) {
    int64_t count = 0;
    const uint8_t *p = buf, *end = buf + n;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        count++;
        p++;
    }
    return count;
}

/* Line i of buf[0:n] is [starts[i], ends[i]) (without its '\n'), the last one up to n; the arrays
 * hold one more than the number of '\n' (bytetext.line_bounds before it drops an empty last line). */
void kt_text_lines(const uint8_t *buf, int64_t n, int64_t *starts, int64_t *ends) {
    int64_t line = 0;
    const uint8_t *p = buf, *end = buf + n;
    starts[0] = 0;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        ends[line] = p - buf;
        starts[++line] = p - buf + 1;
        p++;
    }
    ends[line] = n;
}

/*
 * modal._native_codes / _codes for all the lines at once, with a hash table instead of numpy's
 * dense codes: codes[i] is the number of line i's key hash h[i] (numbered in order of first
 * appearance; -1 where not ok[i]), reps[c] the first line with code c. ok[i] is cleared where line i's
 * key bytes (len1 from its start, len2 from off2) differ from those of its code's first line (a hash
 * collision). Returns the number of codes, or -1 when out of memory.
 */
int64_t kt_text_modal_codes(const uint8_t *buf, int64_t n, const int64_t *starts, const uint64_t *h, int64_t len1,
                            int64_t off2, int64_t len2, uint8_t *ok, int32_t *codes, int64_t *reps) {
    int64_t size = 1 << 12, count = 0;
    int64_t *slot = malloc((size_t)size * sizeof(int64_t)); /* code + 1, 0: empty */
    if (slot == NULL)
        return -1;
    memset(slot, 0, (size_t)size * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++) {
        codes[i] = -1;
        if (!ok[i])
            continue;
        const uint64_t x = h[i];
        int64_t at = (int64_t)((x * 0xD6E8FEB86659FD93ull) >> 20) & (size - 1);
        while (slot[at] && h[reps[slot[at] - 1]] != x)
            at = (at + 1) & (size - 1);
        if (!slot[at]) {
            reps[count] = i;
            slot[at] = ++count;
            codes[i] = (int32_t)(count - 1);
            if (2 * count > size) { /* grow: rehash the codes */
                const int64_t bigger = 2 * size;
                int64_t *fresh = malloc((size_t)bigger * sizeof(int64_t));
                if (fresh == NULL) {
                    free(slot);
                    return -1;
                }
                memset(fresh, 0, (size_t)bigger * sizeof(int64_t));
                for (int64_t c = 0; c < count; c++) {
                    const uint64_t y = h[reps[c]];
                    int64_t to = (int64_t)((y * 0xD6E8FEB86659FD93ull) >> 20) & (bigger - 1);
                    while (fresh[to])
                        to = (to + 1) & (bigger - 1);
                    fresh[to] = c + 1;
                }
                free(slot);
                slot = fresh;
                size = bigger;
            }
            continue;
        }
        const int64_t c = slot[at] - 1;
        const uint8_t *a = buf + starts[i], *b = buf + starts[reps[c]];
        if (memcmp(a, b, (size_t)len1) != 0 || memcmp(a + off2, b + off2, (size_t)len2) != 0) {
            ok[i] = 0;
            continue;
        }
        codes[i] = (int32_t)c;
    }
    free(slot);
    return count;
}

/*
 * The rest of modal._parse_layout for the lines numbered by kt_text_modal_codes: per code, good
 * (the key decodes), the payload offset (negative: a long event name, the payload starts at the first
 * non-space in the 16 bytes from -offset, modal._payload_starts) and the key's values. Writes the
 * lines taken, in order: rows (line numbers: row0 + i), ts (moved down in place), cpu, pid, comm, event, buffer
 * (the values' codes), ps (payload start, at most pe) and pe. Returns how many.
 */
int64_t kt_text_modal_fill(const uint8_t *buf, int64_t n, int64_t row0, const int64_t *starts, const int64_t *ends,
                           const uint8_t *ok, const int32_t *codes, const uint8_t *good, const int64_t *offset,
                           const int32_t *pid_of, const int32_t *cpu_of, const int32_t *comm_of,
                           const int32_t *event_of, const int32_t *buffer_of, int64_t *rows, int64_t *ts,
                           int32_t *cpu, int32_t *pid, int32_t *comm, int32_t *event, int32_t *buffer, int64_t *ps,
                           int64_t *pe) {
    int64_t j = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!ok[i])
            continue;
        const int32_t c = codes[i];
        if (c < 0 || !good[c])
            continue;
        const int64_t s = starts[i], e = ends[i];
        int64_t rel = offset[c];
        if (rel < 0) {
            const int64_t pos = -rel;
            const uint8_t *tail = buf + s + pos;
            int64_t k = 0;
            while (k < 16 && tail[k] == ' ')
                k++;
            if (k == 16)
                k = 0;
            const uint8_t at = tail[k];
            const int found = (at > 32 && at < 127) || at == 10;
            if (!found || pos + k > e - s)
                continue;
            rel = pos + k;
        }
        rows[j] = row0 + i;
        ts[j] = ts[i];
        cpu[j] = cpu_of[c];
        pid[j] = pid_of[c];
        comm[j] = comm_of[c];
        event[j] = event_of[c];
        buffer[j] = buffer_of[c];
        ps[j] = s + rel < e ? s + rel : e;
        pe[j] = e;
        j++;
    }
    return j;
}

/*
 * The rows of each code (an event type) for text._typed_tables, as a stable sort by code gives
 * them: count[c] rows of code c (codes[i] < ncodes), order (the rows, by code then row), fast[c] 0
 * when some row of code c has no payload span (ps < 0), bytes[c] the payload bytes of code c.
 */
void kt_text_group(int64_t n, const uint32_t *codes, int64_t ncodes, const int64_t *ps, const int64_t *pe,
                   int64_t *count, int64_t *order, uint8_t *fast, int64_t *bytes) {
    for (int64_t c = 0; c < ncodes; c++) {
        count[c] = 0;
        fast[c] = 1;
        bytes[c] = 0;
    }
    for (int64_t i = 0; i < n; i++) {
        const uint32_t c = codes[i];
        count[c]++;
        if (ps[i] < 0)
            fast[c] = 0;
        else
            bytes[c] += pe[i] - ps[i];
    }
    int64_t *at = malloc((size_t)(ncodes > 0 ? ncodes : 1) * sizeof(int64_t));
    if (at == NULL) { /* fall back to a slow but correct sort */
        int64_t k = 0;
        for (int64_t c = 0; c < ncodes; c++)
            for (int64_t i = 0; i < n; i++)
                if (codes[i] == (uint32_t)c)
                    order[k++] = i;
        return;
    }
    int64_t total = 0;
    for (int64_t c = 0; c < ncodes; c++) {
        at[c] = total;
        total += count[c];
    }
    for (int64_t i = 0; i < n; i++)
        order[at[codes[i]]++] = i;
    free(at);
}

/*
 * The payloads [ps[i], pe[i]) of the rows of the codes with base[c] >= 0 copied, in line order, to
 * out + base[c] one after the other (base[c] moves on); their starts and ends there go to pbeg / pend
 * at slot[c] (moves on): with slot[c] the first position of code c in kt_text_group's order, pbeg and
 * pend follow that order.
 */
void kt_text_pack_codes(const uint8_t *buf, int64_t n, const int64_t *ps, const int64_t *pe, const uint32_t *codes,
                        int64_t *base, int64_t *slot, uint8_t *out, int64_t *pbeg, int64_t *pend) {
    for (int64_t i = 0; i < n; i++) {
        const uint32_t c = codes[i];
        if (base[c] < 0)
            continue;
        const int64_t len = pe[i] - ps[i], to = base[c];
        if (len > 0)
            memcpy(out + to, buf + ps[i], (size_t)len);
        pbeg[slot[c]] = to;
        pend[slot[c]] = to + len;
        slot[c]++;
        base[c] = to + len;
    }
}

/*
 * Make room in place for m rows in the array a of n items of item bytes (its memory holds n + m):
 * row k of them goes to final[k] (increasing), the n rows keep their order around them. The gaps are
 * left as they were (text._merged_in_place writes them).
 */
void kt_text_open_gaps(uint8_t *a, int64_t item, int64_t n, const int64_t *final, int64_t m) {
    int64_t end = n;
    for (int64_t k = m - 1; k >= 0; k--) {
        const int64_t start = final[k] - k; /* the first of the n rows after inserted row k */
        if (end > start)
            memmove(a + (start + k + 1) * item, a + start * item, (size_t)((end - start) * item));
        end = start;
    }
}

/* kt_text_lines for the part buf[lo:hi] (lo: a line start), in absolute positions: the lines ended by
 * a '\n' there, and with last (the text's last part) the line after the last '\n' too, up to hi. Two
 * parts cut after a '\n' give the arrays of kt_text_lines on the whole, the second part's from index
 * kt_text_count_lines(buf + lo1, hi1 - lo1) of the first. */
void kt_text_lines_part(const uint8_t *buf, int64_t lo, int64_t hi, int64_t *starts, int64_t *ends, int32_t last) {
    int64_t line = 0, start = lo;
    const uint8_t *p = buf + lo, *end = buf + hi;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        starts[line] = start;
        ends[line] = p - buf;
        line++;
        start = p - buf + 1;
        p++;
    }
    if (last) {
        starts[line] = start;
        ends[line] = hi;
    }
}

/* memmove of count items of item bytes in a from index from to index to (modal joins the parts
 * kt_text_modal_fill wrote on two threads). */
void kt_text_move(uint8_t *a, int64_t item, int64_t from, int64_t to, int64_t count) {
    if (count > 0 && from != to)
        memmove(a + to * item, a + from * item, (size_t)(count * item));
}

/*
 * bytetext.intern: a code per distinct byte string buf[pos[i] : pos[i] + len[i]] (numbered in order
 * of first appearance), reps[c] the first row with code c. Returns the number of codes, -1 when out of
 * memory.
 */
/* A hash of k bytes, eight at a time (the codes do not depend on it: only how fast equal spans meet). */
static inline uint64_t span_hash(const uint8_t *p, int64_t k) {
    uint64_t x = MUL1 ^ (uint64_t)k;
    int64_t b = 0;
    for (; b + 8 <= k; b += 8) {
        uint64_t w;
        memcpy(&w, p + b, 8);
        x = (x ^ w) * MUL2;
        x ^= x >> 32;
    }
    if (b < k && k >= 8) { /* the last eight bytes, overlapping: no call for a short copy */
        uint64_t w;
        memcpy(&w, p + k - 8, 8);
        x = (x ^ w) * MUL2;
    } else {
        for (; b < k; b++)
            x = (x ^ p[b]) * MUL2;
    }
    x ^= x >> 29;
    x *= MUL1 | 1;
    return x ^ (x >> 32);
}

/* Whether k bytes at a and b are equal, eight at a time. */
static inline int span_equal(const uint8_t *a, const uint8_t *b, int64_t k) {
    if (k < 8)
        return memcmp(a, b, (size_t)k) == 0;
    for (int64_t i = 0; i + 8 <= k; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        if (x != y)
            return 0;
    }
    uint64_t x, y;
    memcpy(&x, a + k - 8, 8);
    memcpy(&y, b + k - 8, 8);
    return x == y;
}

int64_t kt_text_intern(const uint8_t *buf, int64_t n, const int64_t *pos, const int64_t *len, int32_t *codes,
                       int64_t *reps) {
    int64_t size = 1 << 10, count = 0;
    int64_t *slot = calloc((size_t)size, sizeof(int64_t)); /* code + 1, 0: empty */
    uint64_t *hash = malloc((size_t)size * sizeof(uint64_t)); /* per code, grows with slot */
    if (slot == NULL || hash == NULL) {
        free(slot);
        free(hash);
        return -1;
    }
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *p = buf + pos[i];
        const int64_t k = len[i];
        const uint64_t x = span_hash(p, k);
        int64_t at = (int64_t)(x >> 20) & (size - 1);
        int64_t c = -1;
        while (slot[at]) {
            const int64_t d = slot[at] - 1, r = reps[d];
            if (hash[d] == x && len[r] == k && span_equal(buf + pos[r], p, k)) {
                c = d;
                break;
            }
            at = (at + 1) & (size - 1);
        }
        if (c < 0) {
            c = count++;
            reps[c] = i;
            slot[at] = c + 1;
            hash[c] = x; /* count <= size / 2 + 1: the table grows first */
            if (2 * count > size) {
                const int64_t bigger = 2 * size;
                int64_t *fresh = calloc((size_t)bigger, sizeof(int64_t));
                uint64_t *more = realloc(hash, (size_t)bigger * sizeof(uint64_t));
                if (fresh == NULL || more == NULL) {
                    free(fresh);
                    free(slot);
                    free(more != NULL ? more : hash);
                    return -1;
                }
                hash = more;
                for (int64_t e = 0; e < count; e++) {
                    int64_t to = (int64_t)(hash[e] >> 20) & (bigger - 1);
                    while (fresh[to])
                        to = (to + 1) & (bigger - 1);
                    fresh[to] = e + 1;
                }
                free(slot);
                slot = fresh;
                size = bigger;
            }
        }
        codes[i] = (int32_t)c;
    }
    free(slot);
    free(hash);
    return count;
}
