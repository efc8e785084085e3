package sim

import "fmt"

// Add adds o's counts to s (for totals over a sweep).
func (s *Stats) Add(o Stats) {
	s.Events += o.Events
	s.Sent += o.Sent
	s.Delivered += o.Delivered
	s.Dropped += o.Dropped
	s.Duplicated += o.Duplicated
	s.Delayed += o.Delayed
	s.PartitionDrops += o.PartitionDrops
	s.Partitions += o.Partitions
	s.Crashes += o.Crashes
	s.PowerCuts += o.PowerCuts
	s.Restarts += o.Restarts
	s.Closes += o.Closes
	s.Misconfigured += o.Misconfigured
	s.StorageErrors += o.StorageErrors
	s.Corruptions += o.Corruptions
	s.CorruptionsFound += o.CorruptionsFound
	s.DriftingClocks += o.DriftingClocks
	s.ClockJumps += o.ClockJumps
	s.MinorityDown += o.MinorityDown
	s.LateDeliveries += o.LateDeliveries
	s.Flaps += o.Flaps
	s.ReLeads += o.ReLeads
	s.LedAfterCutOff += o.LedAfterCutOff
	s.SameCounterPrepares += o.SameCounterPrepares
	s.QuickRecrashes += o.QuickRecrashes
	s.TornWrites += o.TornWrites
	s.LostBytes += o.LostBytes
	s.Syncs += o.Syncs
	s.Commits += o.Commits
	s.Batches += o.Batches
	s.Ops += o.Ops
	s.OpsOK += o.OpsOK
	s.OpsUnknown += o.OpsUnknown
	s.OpsNeverExecuted += o.OpsNeverExecuted
	s.SimTime += o.SimTime
	s.Checkpoints += o.Checkpoints
	s.Restores += o.Restores
	s.Installs += o.Installs
	s.Transfers += o.Transfers
	s.CkptCrashes += o.CkptCrashes
	s.CkptErrors += o.CkptErrors
	s.StorageReads += o.StorageReads
	s.LongDowns += o.LongDowns
	s.Pauses += o.Pauses
	s.MasterPauses += o.MasterPauses
	s.Stalls += o.Stalls
	s.MasterChanges += o.MasterChanges
	s.LeaseReads += o.LeaseReads
	s.IndexReads += o.IndexReads
	s.Reads += o.Reads
	s.ReadsFailed += o.ReadsFailed
	s.Resent += o.Resent
	s.ConfTries += o.ConfTries
	s.ConfChanges += o.ConfChanges
	s.ConfFollowers += o.ConfFollowers
	s.Fenced += o.Fenced
	s.MaxInMemory = max(s.MaxInMemory, o.MaxInMemory)
	s.MaxLiveBytes = max(s.MaxLiveBytes, o.MaxLiveBytes)
}

func (s Stats) String() string {
	return fmt.Sprintf("ops=%d ok=%d unknown=%d never-executed=%d commits=%d batches=%d events=%d simtime=%v | faults: dropped=%d duplicated=%d delayed=%d partitions=%d partition-drops=%d crashes=%d power-cuts=%d restarts=%d closes=%d misconfigured-refused=%d torn=%d lost-bytes=%d syncs=%d storage-errors=%d corruptions=%d corruptions-refused=%d drifting-clocks=%d clock-jumps=%d minority-kept-away=%d late-redeliveries=%d flaps=%d re-leads=%d led-after-cut-off=%d same-counter-prepares=%d quick-recrashes=%d | log: long-downs=%d checkpoints=%d restores=%d transfers=%d installs=%d ckpt-crashes=%d ckpt-errors=%d storage-reads=%d max-disk-bytes=%d max-in-memory=%d | master: pauses=%d master-pauses=%d stalls=%d master-changes=%d reads=%d reads-failed=%d lease-reads=%d index-reads=%d resent=%d fenced=%d | membership: asked=%d changed=%d followers=%d",
		s.Ops, s.OpsOK, s.OpsUnknown, s.OpsNeverExecuted, s.Commits, s.Batches, s.Events, s.SimTime, s.Dropped, s.Duplicated, s.Delayed,
		s.Partitions, s.PartitionDrops, s.Crashes, s.PowerCuts, s.Restarts, s.Closes, s.Misconfigured, s.TornWrites, s.LostBytes, s.Syncs, s.StorageErrors, s.Corruptions, s.CorruptionsFound,
		s.DriftingClocks, s.ClockJumps, s.MinorityDown, s.LateDeliveries, s.Flaps, s.ReLeads, s.LedAfterCutOff, s.SameCounterPrepares, s.QuickRecrashes,
		s.LongDowns, s.Checkpoints, s.Restores, s.Transfers, s.Installs, s.CkptCrashes, s.CkptErrors, s.StorageReads, s.MaxLiveBytes, s.MaxInMemory,
		s.Pauses, s.MasterPauses, s.Stalls, s.MasterChanges, s.Reads, s.ReadsFailed, s.LeaseReads, s.IndexReads, s.Resent, s.Fenced, s.ConfTries, s.ConfChanges, s.ConfFollowers)
}
