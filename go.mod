module github.com/paxoskit/paxos

go 1.26

require (
	github.com/anishathalye/porcupine v1.3.1
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/syndtr/goleveldb v1.0.0 // indirect
	pgregory.net/rapid v1.3.0 // indirect
)
