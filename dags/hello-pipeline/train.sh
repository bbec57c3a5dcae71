# "Trains" a model and checks its score against MIN_SCORE.
echo "training on flavours $VISHWA_PARAM_FLAVOURS with $VISHWA_PARAM_ROWS rows"
score=$(awk -v r="$VISHWA_PARAM_ROWS" 'BEGIN { printf "%.2f", 1 - 1 / (1 + r / 100) }')
echo "model score $score (minimum $MIN_SCORE)"
awk -v s="$score" -v m="$MIN_SCORE" 'BEGIN { exit !(s >= m) }' || { echo "score below minimum" >&2; exit 1; }
