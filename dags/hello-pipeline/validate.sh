# Validates the survey: ages 18-99, scores 0-100, no missing fields. Fails the stage otherwise.
. ./survey.sh
rows="${1:?usage: validate.sh ROWS}"
bad=$(survey "$rows" | awk -F, 'NF != 4 || $2 < 18 || $2 > 99 || $4 < 0 || $4 > 100 { n++ } END { print n + 0 }')
if [ "$bad" -ne 0 ]; then
    echo "validation failed: $bad of $rows rows out of range" >&2
    exit 1
fi
echo "validation passed: $rows rows, all fields in range"
