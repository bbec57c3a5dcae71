# Collects the survey: here, synthetic rows; prints what a real ingest would record.
. ./survey.sh
rows="${1:?usage: ingest.sh ROWS}"
echo "collecting $rows survey answers (run $VISHWA_RUN_ID, attempt $VISHWA_ATTEMPT)"
survey "$rows" | awk -F, '{ sum += $4 } END { printf "collected %d rows, mean score %.1f\n", NR, sum / NR }'
