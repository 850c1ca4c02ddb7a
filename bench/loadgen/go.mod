module orrery.dev/bench/loadgen

go 1.24
