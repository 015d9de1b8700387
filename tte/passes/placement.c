/* The greedy arena placement of tte/passes/placement.py, compiled for speed (host only, never on the device).
 *
 * placement.py is the reference: it says what the trials, orders and fits are and why. This file does the same,
 * step for step, so that both give the same offsets, arena and winning trial for every input (tests/
 * test_placement_c.py checks it on random and real plans). The scheme search of `--update auto` plans thousands
 * of train steps, and in Python the placement was most of each plan's time.
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

static void place_unit(const unit_t *u, const member_t *members, const int64_t *size, int64_t at, int64_t *offsets,
                       by_offset_t *placed) {
    for (int32_t k = 0; k < u->count; k++) {
        int32_t i = members[u->start + k].index;
        offsets[i] = at + members[u->start + k].delta;
        if (size[i]) insert_placed(placed, offsets, i);
    }
}

int tte_place(int32_t n, const int64_t *size, const int32_t *first, const int32_t *last, const int32_t *name_rank,
              int64_t alignment, int32_t n_fixed, const int32_t *fixed_index, const int64_t *fixed_offset,
              int32_t n_links, const int32_t *link_a, const int32_t *link_b, const int64_t *link_delta,
              int32_t n_trials, const int32_t *trial_order, const int32_t *trial_tightest, int64_t *offsets_out,
              int64_t *arena_out, int32_t *trial_out, int32_t *error_out) {
    int status = PLACE_NO_MEMORY;
    int32_t steps = 0, nunits = 0, npinned = 0, nfree = 0;
    int32_t *parent = malloc(sizeof(int32_t) * ((size_t)n + 1)), *root_unit = malloc(sizeof(int32_t) * ((size_t)n + 1));
    int32_t *unit_of = malloc(sizeof(int32_t) * ((size_t)n + 1));
    int64_t *rel = malloc(sizeof(int64_t) * ((size_t)n + 1)), *dist = malloc(sizeof(int64_t) * ((size_t)n + 1));
    int64_t *offsets = malloc(sizeof(int64_t) * ((size_t)n + 1)), *fixed_at = malloc(sizeof(int64_t) * ((size_t)n + 1));
    char *is_fixed = calloc((size_t)n + 1, 1);
    by_offset_t by_offset = {NULL, 0};
    member_t *members = malloc(sizeof(member_t) * ((size_t)n + 1));
    unit_t *units = malloc(sizeof(unit_t) * ((size_t)n + 1)), *order = malloc(sizeof(unit_t) * ((size_t)n + 1));
    int32_t *pin_at = malloc(sizeof(int32_t) * ((size_t)n + 1));
    int64_t *live = NULL;
    range_t *banned = NULL;
    *error_out = -1;
    if (!parent || !root_unit || !unit_of || !rel || !dist || !offsets || !fixed_at || !is_fixed ||
        !members || !units || !order || !pin_at)
        goto done;

    /* units: link buffers (a, b, delta) into groups with offsets relative to the group */
    for (int32_t i = 0; i < n; i++) {
        parent[i] = i;
        rel[i] = 0;
    }
    for (int32_t k = 0; k < n_links; k++) {
        int64_t da, db;
        int32_t ra = find(parent, rel, link_a[k], &da), rb = find(parent, rel, link_b[k], &db);
        if (ra == rb) {
            if (db - da != link_delta[k]) {
                status = PLACE_CONTRADICTORY_LINK;
                *error_out = k;
                goto done;
            }
            continue;
        }
        parent[rb] = ra;
        rel[rb] = da + link_delta[k] - db;
    }
    for (int32_t i = 0; i < n; i++) root_unit[i] = -1;
    for (int32_t i = 0; i < n; i++) { /* units numbered by their smallest member index */
        int32_t r = find(parent, rel, i, &dist[i]);
        if (root_unit[r] < 0) root_unit[r] = nunits++;
        unit_of[i] = root_unit[r];
    }
    {
        int32_t *fill = calloc((size_t)nunits + 1, sizeof(int32_t));
        if (!fill) goto done;
        for (int32_t u = 0; u < nunits; u++) units[u].count = 0;
        for (int32_t i = 0; i < n; i++) units[unit_of[i]].count++;
        for (int32_t u = 0, s = 0; u < nunits; u++) {
            units[u].start = s;
            s += units[u].count;
        }
        for (int32_t i = 0; i < n; i++) {
            int32_t u = unit_of[i];
            members[units[u].start + fill[u]].index = i;
            members[units[u].start + fill[u]].delta = dist[i];
            fill[u]++;
        }
        free(fill);
    }
    for (int32_t u = 0; u < nunits; u++) {
        unit_t *x = &units[u];
        int64_t low = INT64_MAX;
        for (int32_t k = 0; k < x->count; k++)
            if (members[x->start + k].delta < low) low = members[x->start + k].delta;
        x->size = INT64_MIN;
        x->first = INT64_MAX;
        x->last = INT64_MIN;
        x->name = INT64_MAX;
        for (int32_t k = 0; k < x->count; k++) {
            member_t *m = &members[x->start + k];
            m->delta -= low;
            if (m->delta + size[m->index] > x->size) x->size = m->delta + size[m->index];
            if (first[m->index] < x->first) x->first = first[m->index];
            if (last[m->index] > x->last) x->last = last[m->index];
            if (name_rank[m->index] < x->name) x->name = name_rank[m->index];
        }
    }

    /* live bytes per step (linked buffers live together share their common bytes), the bound and pressures */
    for (int32_t i = 0; i < n; i++)
        if (last[i] + 1 > steps) steps = last[i] + 1;
    live = calloc((size_t)steps + 2, sizeof(int64_t));
    if (!live) goto done;
    for (int32_t i = 0; i < n; i++) {
        live[first[i]] += size[i];
        live[last[i] + 1] -= size[i];
    }
    for (int32_t k = 0; k < n_links; k++) {
        int32_t a = link_a[k], b = link_b[k];
        int64_t d = link_delta[k], hi = size[a] < d + size[b] ? size[a] : d + size[b];
        int64_t shared = hi - (d > 0 ? d : 0);
        int32_t f = first[a] > first[b] ? first[a] : first[b], l = last[a] < last[b] ? last[a] : last[b];
        if (shared > 0 && f <= l) {
            live[f] -= shared;
            live[l + 1] += shared;
        }
    }
    int64_t peak = 0, run = 0;
    for (int32_t s = 0; s < steps; s++) {
        run += live[s];
        live[s] = run;
        if (run > peak) peak = run;
    }
    int64_t bound = align_up(peak, alignment);
    for (int32_t u = 0; u < nunits; u++) {
        int64_t p = 0;
        for (int64_t s = units[u].first; s <= units[u].last && s < steps; s++)
            if (live[s] > p) p = live[s];
        units[u].pressure = p;
    }

    /* pinned units (a member at a fixed offset) and free ones */
    for (int32_t k = 0; k < n_fixed; k++) {
        is_fixed[fixed_index[k]] = 1;
        fixed_at[fixed_index[k]] = fixed_offset[k];
    }
    for (int32_t u = 0; u < nunits; u++) {
        int32_t anchor = -1;
        for (int32_t k = 0; k < units[u].count && anchor < 0; k++)
            if (is_fixed[members[units[u].start + k].index]) anchor = k;
        if (anchor < 0) {
            order[nfree++] = units[u];
            continue;
        }
        member_t *a = &members[units[u].start + anchor];
        int64_t at = fixed_at[a->index] - a->delta;
        int bad = at < 0;
        for (int32_t k = 0; k < units[u].count; k++) {
            member_t *m = &members[units[u].start + k];
            if (is_fixed[m->index] && fixed_at[m->index] != at + m->delta) bad = 1;
        }
        if (bad) {
            status = PLACE_BAD_FIXED;
            *error_out = a->index;
            goto done;
        }
        pin_at[npinned++] = u;
    }

    {
        int32_t most = 0; /* a linked unit's banned ranges: each member against every placed buffer */
        for (int32_t u = 0; u < nunits; u++)
            if (units[u].count > 1 && units[u].count > most) most = units[u].count;
        banned = malloc(sizeof(range_t) * ((size_t)most * (size_t)n + 1));
        by_offset.index = malloc(sizeof(int32_t) * ((size_t)n + 1));
        if (!banned || !by_offset.index) goto done;
    }

    int64_t best_arena = -1;
    for (int32_t t = 0; t < n_trials; t++) {
        order_kind = trial_order[t];
        qsort(order, (size_t)nfree, sizeof(unit_t), cmp_units);
        by_offset.count = 0;
        for (int32_t p = 0; p < npinned; p++) {
            const unit_t *u = &units[pin_at[p]];
            int32_t anchor = -1;
            for (int32_t k = 0; k < u->count && anchor < 0; k++)
                if (is_fixed[members[u->start + k].index]) anchor = k;
            int64_t at = fixed_at[members[u->start + anchor].index] - members[u->start + anchor].delta;
            place_unit(u, members, size, at, offsets, &by_offset);
        }
        for (int32_t f = 0; f < nfree; f++) {
            const unit_t *u = &order[f];
            int32_t uid = unit_of[members[u->start].index];
            int64_t at = fit(u, members, size, first, last, offsets, &by_offset, unit_of, uid, alignment,
                             trial_tightest[t], banned);
            place_unit(u, members, size, at, offsets, &by_offset);
        }
        int64_t arena = 0;
        for (int32_t i = 0; i < n; i++) {
            if (!size[i]) continue;
            int64_t top = align_up(offsets[i] + size[i], alignment);
            if (top > arena) arena = top;
        }
        if (best_arena < 0 || arena < best_arena) {
            best_arena = arena;
            *trial_out = t;
            memcpy(offsets_out, offsets, sizeof(int64_t) * (size_t)n);
        }
        if (best_arena <= bound) break;
    }
    *arena_out = best_arena;
    status = PLACE_OK;
done:
    free(parent);
    free(root_unit);
    free(unit_of);
    free(rel);
    free(dist);
    free(offsets);
    free(fixed_at);
    free(is_fixed);
    free(members);
    free(units);
    free(order);
    free(pin_at);
    free(live);
    free(banned);
    free(by_offset.index);
    return status;
}
