# prom_check.awk - checks a /metrics page against the Prometheus text format
# 0.0.4, histograms in depth. Portable awk (Debian's default is mawk).
#
# Every line must be blank, "# HELP name text", "# TYPE name type" (once per
# name, before its samples), another comment, or "name{labels} value" with
# well-formed labels and a numeric value; a sample needs a TYPE line. For each
# histogram series (its labels less le):
#   - buckets come in strictly increasing le, with integer counts that never
#     decrease, and end with le="+Inf";
#   - the +Inf bucket equals _count; _sum and _count are present;
#   - _sum > 0 whenever _count > 0 (every quantity jobwire exports takes time
#     or has a size).
# Prints one line per problem and exits 1, or prints "ok, N histogram series".
#
# Usage: awk -f prom_check.awk < metrics.txt

function bad(msg) {
    print "prom_check: line " NR ": " msg
    errors++
}

function numeric(v) {
    return v ~ /^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$/
}

BEGIN { errors = 0; nseries = 0 }

/^$/ { next }

/^# TYPE / {
    if (NF != 4) { bad("malformed TYPE line"); next }
    if ($3 in type) bad("a second TYPE line for " $3)
    if ($4 !~ /^(counter|gauge|histogram|summary|untyped)$/) bad("unknown type " $4)
    if ($3 in seen) bad("TYPE of " $3 " after its samples")
    type[$3] = $4
    next
}

/^#/ { next }

{
    line = $0
    if (!match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*/)) { bad("no metric name: " line); next }
    name = substr(line, 1, RLENGTH)
    rest = substr(line, RLENGTH + 1)
    labels = ""
    if (substr(rest, 1, 1) == "{") {
        close_at = index(rest, "}")
        if (!close_at) { bad("unclosed label list: " line); next }
        labels = substr(rest, 2, close_at - 2)
        rest = substr(rest, close_at + 1)
    }
    if (substr(rest, 1, 1) != " ") { bad("no space before the value: " line); next }
    value = substr(rest, 2)
    if (!numeric(value) && value !~ /^[+-]Inf$/ && value != "NaN") {
        bad("bad value '" value "': " line)
        next
    }

    # Labels: name="value" pairs, comma-separated; le is taken apart.
    le = ""
    other = ""
    l = labels
    while (l != "") {
        if (!match(l, /^[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*"/)) { bad("bad labels {" labels "}"); next }
        pair = substr(l, 1, RLENGTH)
        l = substr(l, RLENGTH + 1)
        if (substr(l, 1, 1) == ",")
            l = substr(l, 2)
        else if (l != "") { bad("bad labels {" labels "}"); next }
        eq = index(pair, "=")
        if (substr(pair, 1, eq - 1) == "le")
            le = substr(pair, eq + 2, length(pair) - eq - 2)
        else
            other = other (other == "" ? "" : ",") pair
    }

    base = name
    suffix = ""
    if (name ~ /_bucket$/) { base = substr(name, 1, length(name) - 7); suffix = "bucket" }
    else if (name ~ /_sum$/) { base = substr(name, 1, length(name) - 4); suffix = "sum" }
    else if (name ~ /_count$/) { base = substr(name, 1, length(name) - 6); suffix = "count" }
    if (!(base in type) || type[base] != "histogram") {
        if (!(name in type)) bad("a sample of " name " without a TYPE line")
        seen[name] = 1
        next
    }
    seen[base] = 1
    key = base "{" other "}"
    if (!(key in nb)) { keys[++nseries] = key; nb[key] = 0 }
    if (suffix == "bucket") {
        if (le == "") { bad(key ": a bucket without le"); next }
        if (key in inf) { bad(key ": a bucket after +Inf"); next }
        if (!numeric(value) || value + 0 != int(value + 0)) bad(key ": bucket count " value)
        if (le == "+Inf")
            inf[key] = value + 0
        else if (!numeric(le)) { bad(key ": le=\"" le "\""); next }
        else if (nb[key] > 0 && le + 0 <= lastle[key]) bad(key ": le=" le " not above " lastle[key])
        if (nb[key] > 0 && value + 0 < lastc[key])
            bad(key ": bucket le=" le " holds " value ", less than the bucket before (" lastc[key] ")")
        if (le != "+Inf")
            lastle[key] = le + 0
        lastc[key] = value + 0
        nb[key]++
    } else if (suffix == "sum") {
        sum[key] = value + 0
        hassum[key] = 1
    } else if (suffix == "count") {
        cnt[key] = value + 0
        hascnt[key] = 1
    } else {
        bad(name ": a histogram holds only _bucket, _sum and _count samples")
    }
}

END {
    for (i = 1; i <= nseries; i++) {
        k = keys[i]
        if (!(k in inf)) { bad(k ": no le=\"+Inf\" bucket"); continue }
        if (!(k in hascnt)) bad(k ": no _count")
        if (!(k in hassum)) bad(k ": no _sum")
        if (inf[k] != cnt[k]) bad(k ": the +Inf bucket (" inf[k] ") is not _count (" cnt[k] ")")
        if (cnt[k] > 0 && !(sum[k] > 0)) bad(k ": _sum " sum[k] " with _count " cnt[k])
    }
    if (errors)
        exit 1
    print "prom_check: ok, " nseries " histogram series"
}
