module github.com/paxoskit/paxos

go 1.26

require (
	github.com/anishathalye/porcupine v1.3.1
	github.com/syndtr/goleveldb v1.0.0
	google.golang.org/protobuf v1.36.12
	pgregory.net/rapid v1.3.0
)

require github.com/golang/snappy v0.0.0-20180518054509-2e65f85255db // indirect
