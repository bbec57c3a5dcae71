# Sourced by the stages: NIGHT is the run's logical time (the schedule slot), or now for a run
# started by hand, which stands for no slot.
night_of() {
  if [ -n "${1:-}" ]; then
    NIGHT="$1"
  else
    NIGHT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    echo "no logical time (a manual run): using now, $NIGHT"
  fi
  # The night's label: its UTC date, e.g. 2025-06-01 for the 02:00 IST slot of 2025-06-02.
  NIGHT_DATE=$(echo "$NIGHT" | cut -c1-10)
}
