package main

import (
	"flag"
	"time"

	"github.com/switchyard-dev/switchyard/services/accountpool"
)

// The AccountPool's PostgreSQL pools and usage-read limits.
const (
	envDBMaxConns           = "SWITCHYARD_DB_MAX_CONNS"
	envUsageQueryConns      = "SWITCHYARD_USAGE_QUERY_CONNS"
	envUsageQueryTimeout    = "SWITCHYARD_USAGE_QUERY_TIMEOUT"
	envUsageMaxRange        = "SWITCHYARD_USAGE_MAX_RANGE"
	envUsageMaxRecordsRange = "SWITCHYARD_USAGE_MAX_RECORDS_RANGE"
)

// usageFlags size the AccountPool's connection pools and bound its usage
// reads (GetUsage), so one organization's reports cannot starve another's
// model calls.
type usageFlags struct {
	dbMaxConns, usageQueryConns                            int
	usageQueryTimeout, usageMaxRange, usageMaxRecordsRange time.Duration
}

func (f *usageFlags) register(fs *flag.FlagSet) {
	envVar(fs, &f.dbMaxConns, "db-max-conns", envDBMaxConns, accountpool.DefaultDBMaxConns, parsePositiveInt,
		"PostgreSQL connections of the AccountPool's hot path (selection, usage ledger writes); overrides pool_max_conns in the URL")
	envVar(fs, &f.usageQueryConns, "usage-query-conns", envUsageQueryConns, accountpool.DefaultUsageQueryConns, parsePositiveInt,
		"PostgreSQL connections of a separate pool only GetUsage reads use: more reads at once wait, within their deadline")
	envVar(fs, &f.usageQueryTimeout, "usage-query-timeout", envUsageQueryTimeout, accountpool.DefaultUsageQueryTimeout, parsePositiveDuration,
		"statement timeout of one GetUsage read on PostgreSQL; a read stopped by it answers ResourceExhausted")
	envVar(fs, &f.usageMaxRange, "usage-max-range", envUsageMaxRange, accountpool.DefaultUsageMaxRange, parsePositiveDuration,
		"longest range GetUsage sums at once (9600h is 400 days); longer is InvalidArgument")
	envVar(fs, &f.usageMaxRecordsRange, "usage-max-records-range", envUsageMaxRecordsRange, accountpool.DefaultUsageMaxRecordsRange, parsePositiveDuration,
		"longest range GetUsage lists rows of (include_records; 744h is 31 days); longer is InvalidArgument")
}

func (f *usageFlags) apply(c *accountpool.Config) {
	c.DBMaxConns, c.UsageQueryConns = f.dbMaxConns, f.usageQueryConns
	c.UsageQueryTimeout, c.UsageMaxRange, c.UsageMaxRecordsRange = f.usageQueryTimeout, f.usageMaxRange, f.usageMaxRecordsRange
}
