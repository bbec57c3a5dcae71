# Retrains on the night's snapshot and checks the score against MIN_SCORE.
. ./night.sh
night_of "${1:-}"
rows="${2:?usage: retrain.sh LOGICAL_TIME ROWS}"
echo "retraining on snapshot survey-$NIGHT_DATE ($rows rows)"
score=$(awk -v r="$rows" 'BEGIN { printf "%.2f", 1 - 1 / (1 + r / 100) }')
echo "model score $score (minimum $MIN_SCORE)"
awk -v s="$score" -v m="$MIN_SCORE" 'BEGIN { exit !(s >= m) }' || { echo "score below minimum" >&2; exit 1; }
