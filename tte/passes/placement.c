/* The greedy arena placement of tte/passes/placement.py, compiled for speed (host only, never on the device).
 *
 * placement.py is the reference: it says what the trials, orders and fits are and why. This file does the same,
 * step for step, so that both give the same offsets, arena and winning trial for every input (tests/
 * test_placement_native.py checks it on random and real plans). The scheme search of `--update auto` plans
 * hundreds of train steps, and in Python the placement was most of each plan's time.
 *
 * Host C: malloc is fine here. Names enter as ranks (the order of the buffer names), which is all the Python
 * tie-breaks use. Offsets are int64 (an arena is far below 2^31, but relative offsets may be negative before
 * they are normalised). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { ORDER_SIZE, ORDER_FIRST_USE, ORDER_AREA, ORDER_LAST_USE, ORDER_PRESSURE };
enum { PLACE_OK = 0, PLACE_CONTRADICTORY_LINK = 1, PLACE_BAD_FIXED = 2, PLACE_NO_MEMORY = 3 };

typedef struct {
    int64_t size, first, last, name, pressure;
    int32_t start, count; /* members[start .. start + count) */
} unit_t;

typedef struct {
    int32_t index;
    int64_t delta; /* offset relative to the unit, >= 0 */
} member_t;

typedef struct {
    int64_t lo, hi;
} range_t;

static int64_t align_up(int64_t n, int64_t alignment) {
    /* floor division as in Python: n may be negative */
    int64_t q = n + alignment - 1;
    int64_t d = q / alignment;
    if (q % alignment != 0 && q < 0) d -= 1;
    return d * alignment;
}

/* union-find with relative offsets: the root of i and i's offset relative to it */
static int32_t find(const int32_t *parent, const int64_t *rel, int32_t i, int64_t *d) {
    *d = 0;
    while (parent[i] != i) {
        *d += rel[i];
        i = parent[i];
    }
    return i;
}

static int order_kind;

static int64_t cmp3(int64_t a0, int64_t b0, int64_t a1, int64_t b1, int64_t a2, int64_t b2) {
    if (a0 != b0) return a0 < b0 ? -1 : 1;
    if (a1 != b1) return a1 < b1 ? -1 : 1;
    if (a2 != b2) return a2 < b2 ? -1 : 1;
    return 0;
}

static int cmp_units(const void *pa, const void *pb) {
    const unit_t *a = (const unit_t *)pa, *b = (const unit_t *)pb;
    int64_t c = 0;
    switch (order_kind) {
    case ORDER_SIZE: c = cmp3(-a->size, -b->size, a->first, b->first, a->name, b->name); break;
    case ORDER_FIRST_USE: c = cmp3(a->first, b->first, -a->size, -b->size, a->name, b->name); break;
    case ORDER_AREA:
        c = cmp3(-a->size * (a->last - a->first + 1), -b->size * (b->last - b->first + 1), a->first, b->first,
                 a->name, b->name);
        break;
    case ORDER_LAST_USE: c = cmp3(-a->last, -b->last, -a->size, -b->size, a->name, b->name); break;
    default:
        c = cmp3(-a->pressure, -b->pressure, -a->size, -b->size, a->first, b->first);
        if (c == 0) c = a->name < b->name ? -1 : (a->name > b->name);
        break;
    }
    return (int)c;
}

static int cmp_ranges(const void *pa, const void *pb) {
    const range_t *a = (const range_t *)pa, *b = (const range_t *)pb;
    if (a->lo != b->lo) return a->lo < b->lo ? -1 : 1;
    if (a->hi != b->hi) return a->hi < b->hi ? -1 : 1;
    return 0;
}

/* The placed buffers of non-zero size in offset order (a fit walks them instead of sorting its neighbours). */
typedef struct {
    int32_t *index;
    int32_t count;
} by_offset_t;

static void insert_placed(by_offset_t *p, const int64_t *offsets, int32_t j) {
    int32_t lo = 0, hi = p->count;
    while (lo < hi) { /* after every buffer at an offset <= offsets[j] */
        int32_t mid = (lo + hi) / 2;
        if (offsets[p->index[mid]] <= offsets[j]) lo = mid + 1;
        else hi = mid;
    }
    memmove(&p->index[lo + 1], &p->index[lo], sizeof(int32_t) * (size_t)(p->count - lo));
    p->index[lo] = j;
    p->count++;
}

static int live_together(const int32_t *first, const int32_t *last, int32_t i, int32_t j) {
    return first[i] <= last[j] && first[j] <= last[i];
}

/* One step of the scan over banned ranges in ascending order (placement.py's _fit): 1 when the lowest fit is
 * found (at), else 0. */
typedef struct {
    int64_t at, best, best_room, alignment;
    int tightest;
} scan_t;

static int scan_step(scan_t *s, int64_t lo, int64_t hi) {
    if (hi <= s->at) return 0;
    if (lo > s->at) {
        if (!s->tightest) return 1;
        if (s->best < 0 || lo - s->at < s->best_room) {
            s->best = s->at;
            s->best_room = lo - s->at;
        }
    }
    int64_t up = align_up(hi, s->alignment);
    if (up > s->at) s->at = up;
    return 0;
}

/* the lowest aligned unit offset where no member meets a placed buffer live with it, or the start of the
 * tightest free range (see _fit in placement.py). A one-buffer unit's banned ranges come in offset order from
 * `placed`; a linked unit's are collected and sorted. */
static int64_t fit(const unit_t *u, const member_t *members, const int64_t *size, const int32_t *first,
                   const int32_t *last, const int64_t *offsets, const by_offset_t *placed, const int32_t *unit_of,
                   int32_t uid, int64_t alignment, int tightest, range_t *banned) {
    scan_t s = {0, -1, -1, alignment, tightest};
    if (u->count == 1) {
        int32_t i = members[u->start].index;
        int64_t sz = size[i];
        if (!sz) return 0;
        for (int32_t k = 0; k < placed->count; k++) {
            int32_t j = placed->index[k];
            if (live_together(first, last, i, j) && scan_step(&s, offsets[j] - sz + 1, offsets[j] + size[j]))
                return s.at;
        }
        return s.best < 0 ? s.at : s.best;
    }
    int32_t nb = 0;
    for (int32_t k = 0; k < u->count; k++) {
        int32_t i = members[u->start + k].index;
        int64_t d = members[u->start + k].delta, sz = size[i];
        if (!sz) continue;
        for (int32_t c = 0; c < placed->count; c++) {
            int32_t j = placed->index[c];
            if (unit_of[j] == uid || !live_together(first, last, i, j)) continue;
            banned[nb].lo = offsets[j] - d - sz + 1;
            banned[nb].hi = offsets[j] + size[j] - d;
            nb++;
        }
    }
    qsort(banned, (size_t)nb, sizeof(range_t), cmp_ranges);
    for (int32_t k = 0; k < nb; k++)
        if (scan_step(&s, banned[k].lo, banned[k].hi)) return s.at;
    return s.best < 0 ? s.at : s.best;
}

/* Everything one call works with; the caller's arrays are read only. */
typedef struct {
    int32_t n, nunits, nfree, npinned;
    const int64_t *size;
    const int32_t *first, *last;
    int64_t alignment;
    int32_t *unit_of, *pin_at;
    member_t *members;
    unit_t *units, *order; /* order: the free units, sorted per trial */
    int64_t *fixed_at, *offsets;
    char *is_fixed;
    by_offset_t placed;
    range_t *banned;
} placer_t;

/* Group buffers by the links (a, b, delta: offset of b = offset of a + delta) into units numbered by their
 * smallest member; -1 and the link in *error when two links contradict each other. */
static int build_units(placer_t *p, const int32_t *name_rank, int32_t n_links, const int32_t *link_a,
                       const int32_t *link_b, const int64_t *link_delta, int32_t *error) {
    int32_t n = p->n, *parent = malloc(sizeof(int32_t) * ((size_t)n + 1));
    int32_t *root_unit = malloc(sizeof(int32_t) * ((size_t)n + 1)), *fill = calloc((size_t)n + 1, sizeof(int32_t));
    int64_t *rel = malloc(sizeof(int64_t) * ((size_t)n + 1)), *dist = malloc(sizeof(int64_t) * ((size_t)n + 1));
    int status = -1;
    if (!parent || !root_unit || !fill || !rel || !dist) goto done;
    for (int32_t i = 0; i < n; i++) {
        parent[i] = i;
        rel[i] = 0;
        root_unit[i] = -1;
    }
    for (int32_t k = 0; k < n_links; k++) {
        int64_t da, db;
        int32_t ra = find(parent, rel, link_a[k], &da), rb = find(parent, rel, link_b[k], &db);
        if (ra == rb && db - da != link_delta[k]) {
            *error = k;
            status = PLACE_CONTRADICTORY_LINK;
            goto done;
        }
        if (ra != rb) {
            parent[rb] = ra;
            rel[rb] = da + link_delta[k] - db;
        }
    }
    p->nunits = 0;
    for (int32_t i = 0; i < n; i++) {
        int32_t r = find(parent, rel, i, &dist[i]);
        if (root_unit[r] < 0) {
            root_unit[r] = p->nunits;
            p->units[p->nunits++].count = 0;
        }
        p->unit_of[i] = root_unit[r];
        p->units[p->unit_of[i]].count++;
    }
    for (int32_t u = 0, start = 0; u < p->nunits; u++) {
        p->units[u].start = start;
        start += p->units[u].count;
    }
    for (int32_t i = 0; i < n; i++) {
        unit_t *u = &p->units[p->unit_of[i]];
        p->members[u->start + fill[p->unit_of[i]]++] = (member_t){i, dist[i]};
    }
    for (int32_t u = 0; u < p->nunits; u++) {
        unit_t *x = &p->units[u];
        int64_t low = INT64_MAX;
        for (int32_t k = 0; k < x->count; k++)
            if (p->members[x->start + k].delta < low) low = p->members[x->start + k].delta;
        x->size = INT64_MIN;
        x->first = INT64_MAX;
        x->last = INT64_MIN;
        x->name = INT64_MAX;
        for (int32_t k = 0; k < x->count; k++) {
            member_t *m = &p->members[x->start + k];
            m->delta -= low;
            if (m->delta + p->size[m->index] > x->size) x->size = m->delta + p->size[m->index];
            if (p->first[m->index] < x->first) x->first = p->first[m->index];
            if (p->last[m->index] > x->last) x->last = p->last[m->index];
            if (name_rank[m->index] < x->name) x->name = name_rank[m->index];
        }
    }
    status = 0;
done:
    free(parent);
    free(root_unit);
    free(fill);
    free(rel);
    free(dist);
    return status;
}

/* Live bytes per step (linked buffers live together share their common bytes): the aligned peak, a bound no
 * arena can beat, and each unit's pressure (its largest live count). -1 when out of memory. */
static int64_t live_bound(placer_t *p, int32_t n_links, const int32_t *link_a, const int32_t *link_b,
                          const int64_t *link_delta) {
    int32_t steps = 0;
    for (int32_t i = 0; i < p->n; i++)
        if (p->last[i] + 1 > steps) steps = p->last[i] + 1;
    int64_t *live = calloc((size_t)steps + 2, sizeof(int64_t)), peak = 0, run = 0;
    if (!live) return -1;
    for (int32_t i = 0; i < p->n; i++) {
        live[p->first[i]] += p->size[i];
        live[p->last[i] + 1] -= p->size[i];
    }
    for (int32_t k = 0; k < n_links; k++) {
        int32_t a = link_a[k], b = link_b[k];
        int64_t d = link_delta[k], hi = p->size[a] < d + p->size[b] ? p->size[a] : d + p->size[b];
        int64_t shared = hi - (d > 0 ? d : 0);
        int32_t f = p->first[a] > p->first[b] ? p->first[a] : p->first[b];
        int32_t l = p->last[a] < p->last[b] ? p->last[a] : p->last[b];
        if (shared > 0 && f <= l) {
            live[f] -= shared;
            live[l + 1] += shared;
        }
    }
    for (int32_t s = 0; s < steps; s++) {
        run += live[s];
        live[s] = run;
        if (run > peak) peak = run;
    }
    for (int32_t u = 0; u < p->nunits; u++) {
        int64_t most = 0;
        for (int64_t s = p->units[u].first; s <= p->units[u].last && s < steps; s++)
            if (live[s] > most) most = live[s];
        p->units[u].pressure = most;
    }
    free(live);
    return align_up(peak, p->alignment);
}

/* The first member of unit u at a fixed offset, or -1. */
static int32_t anchor_of(const placer_t *p, const unit_t *u) {
    for (int32_t k = 0; k < u->count; k++)
        if (p->is_fixed[p->members[u->start + k].index]) return k;
    return -1;
}

/* Pinned units (a member at a fixed offset) and free ones; -1 and the buffer in *error when a unit's fixed
 * offsets contradict its links (or put it below 0). */
static int pin_units(placer_t *p, int32_t n_fixed, const int32_t *fixed_index, const int64_t *fixed_offset,
                     int32_t *error) {
    for (int32_t k = 0; k < n_fixed; k++) {
        p->is_fixed[fixed_index[k]] = 1;
        p->fixed_at[fixed_index[k]] = fixed_offset[k];
    }
    p->npinned = p->nfree = 0;
    for (int32_t u = 0; u < p->nunits; u++) {
        int32_t anchor = anchor_of(p, &p->units[u]);
        if (anchor < 0) {
            p->order[p->nfree++] = p->units[u];
            continue;
        }
        const member_t *a = &p->members[p->units[u].start + anchor];
        int64_t at = p->fixed_at[a->index] - a->delta;
        int bad = at < 0;
        for (int32_t k = 0; k < p->units[u].count; k++) {
            const member_t *m = &p->members[p->units[u].start + k];
            if (p->is_fixed[m->index] && p->fixed_at[m->index] != at + m->delta) bad = 1;
        }
        if (bad) {
            *error = a->index;
            return PLACE_BAD_FIXED;
        }
        p->pin_at[p->npinned++] = u;
    }
    return 0;
}

static void place_unit(placer_t *p, const unit_t *u, int64_t at) {
    for (int32_t k = 0; k < u->count; k++) {
        int32_t i = p->members[u->start + k].index;
        p->offsets[i] = at + p->members[u->start + k].delta;
        if (p->size[i]) insert_placed(&p->placed, p->offsets, i);
    }
}

/* One greedy pass: pinned units at their offsets, then the free units in `order_kind`'s order, each at its
 * fit. Returns the arena. */
static int64_t run_trial(placer_t *p, int tightest) {
    qsort(p->order, (size_t)p->nfree, sizeof(unit_t), cmp_units);
    p->placed.count = 0;
    for (int32_t k = 0; k < p->npinned; k++) {
        const unit_t *u = &p->units[p->pin_at[k]];
        const member_t *a = &p->members[u->start + anchor_of(p, u)];
        place_unit(p, u, p->fixed_at[a->index] - a->delta);
    }
    for (int32_t f = 0; f < p->nfree; f++) {
        const unit_t *u = &p->order[f];
        int32_t uid = p->unit_of[p->members[u->start].index];
        place_unit(p, u, fit(u, p->members, p->size, p->first, p->last, p->offsets, &p->placed, p->unit_of, uid,
                             p->alignment, tightest, p->banned));
    }
    int64_t arena = 0;
    for (int32_t i = 0; i < p->n; i++) {
        int64_t top = p->size[i] ? align_up(p->offsets[i] + p->size[i], p->alignment) : 0;
        if (top > arena) arena = top;
    }
    return arena;
}

int tte_place(int32_t n, const int64_t *size, const int32_t *first, const int32_t *last, const int32_t *name_rank,
              int64_t alignment, int32_t n_fixed, const int32_t *fixed_index, const int64_t *fixed_offset,
              int32_t n_links, const int32_t *link_a, const int32_t *link_b, const int64_t *link_delta,
              int32_t n_trials, const int32_t *trial_order, const int32_t *trial_tightest, int64_t *offsets_out,
              int64_t *arena_out, int32_t *trial_out, int32_t *error_out) {
    size_t slots = (size_t)n + 1;
    placer_t p = {n, 0, 0, 0, size, first, last, alignment, malloc(sizeof(int32_t) * slots),
                  malloc(sizeof(int32_t) * slots), malloc(sizeof(member_t) * slots), malloc(sizeof(unit_t) * slots),
                  malloc(sizeof(unit_t) * slots), malloc(sizeof(int64_t) * slots), malloc(sizeof(int64_t) * slots),
                  calloc(slots, 1), {malloc(sizeof(int32_t) * slots), 0}, NULL};
    int status = PLACE_NO_MEMORY, most = 0;
    int64_t bound, best = -1;
    *error_out = -1;
    *trial_out = 0;
    if (!p.unit_of || !p.pin_at || !p.members || !p.units || !p.order || !p.fixed_at || !p.offsets ||
        !p.is_fixed || !p.placed.index)
        goto done;
    if ((status = build_units(&p, name_rank, n_links, link_a, link_b, link_delta, error_out)) != 0) {
        if (status < 0) status = PLACE_NO_MEMORY;
        goto done;
    }
    status = PLACE_NO_MEMORY;
    if ((bound = live_bound(&p, n_links, link_a, link_b, link_delta)) < 0) goto done;
    if ((status = pin_units(&p, n_fixed, fixed_index, fixed_offset, error_out)) != 0) goto done;
    status = PLACE_NO_MEMORY;
    for (int32_t u = 0; u < p.nunits; u++) /* a linked unit's banned ranges: each member against every buffer */
        if (p.units[u].count > 1 && p.units[u].count > most) most = p.units[u].count;
    if (!(p.banned = malloc(sizeof(range_t) * ((size_t)most * (size_t)n + 1)))) goto done;
    for (int32_t t = 0; t < n_trials && (best < 0 || best > bound); t++) {
        order_kind = trial_order[t];
        int64_t arena = run_trial(&p, trial_tightest[t]);
        if (best < 0 || arena < best) { /* the first trial reaching the smallest arena wins */
            best = arena;
            *trial_out = t;
            memcpy(offsets_out, p.offsets, sizeof(int64_t) * (size_t)n);
        }
    }
    *arena_out = best < 0 ? 0 : best;
    status = PLACE_OK;
done:
    free(p.unit_of);
    free(p.pin_at);
    free(p.members);
    free(p.units);
    free(p.order);
    free(p.fixed_at);
    free(p.offsets);
    free(p.is_fixed);
    free(p.placed.index);
    free(p.banned);
    return status;
}
