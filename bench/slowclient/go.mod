module github.com/corral-dev/corral/bench/slowclient

go 1.26.8
