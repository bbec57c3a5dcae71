# Computes one flavour's features: its share of answers and mean score.
. ./survey.sh
flavour="${1:?usage: features.sh FLAVOUR ROWS}"
rows="${2:?usage: features.sh FLAVOUR ROWS}"
survey "$rows" | awk -F, -v f="$flavour" '
    $3 == f { n++; sum += $4 }
    END { if (n == 0) { printf "%s: no answers\n", f } else { printf "%s: %d answers (%.0f%%), mean score %.1f\n", f, n, 100 * n / NR, sum / n } }'
