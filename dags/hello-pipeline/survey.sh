# Prints N synthetic survey rows: id,age,flavour,score. Deterministic for a given N.
survey() {
    awk -v n="$1" 'BEGIN {
        srand(n); split("chocolate vanilla red-velvet mango lemon", f, " ");
        for (i = 1; i <= n; i++) {
            printf "%d,%d,%s,%d\n", i, 18 + int(rand() * 50), f[1 + int(rand() * 5)], int(rand() * 100)
        }
    }'
}
