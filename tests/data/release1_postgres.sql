-- statement
CREATE TABLE profile_database (
	id SERIAL NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	profile_count INTEGER NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (name)
);
-- statement
CREATE TABLE audience_build (
	id SERIAL NOT NULL, 
	campaign_id INTEGER NOT NULL, 
	reason VARCHAR NOT NULL, 
	status VARCHAR NOT NULL, 
	requested_by VARCHAR NOT NULL, 
	requested_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	started_at TIMESTAMP WITHOUT TIME ZONE, 
	finished_at TIMESTAMP WITHOUT TIME ZONE, 
	heartbeat_at TIMESTAMP WITHOUT TIME ZONE, 
	worker VARCHAR, 
	mailing_id INTEGER, 
	pauses_mailings BOOLEAN NOT NULL, 
	total INTEGER NOT NULL, 
	processed INTEGER NOT NULL, 
	checkpoint JSON, 
	warnings JSON NOT NULL, 
	error VARCHAR, 
	PRIMARY KEY (id)
);
-- statement
CREATE UNIQUE INDEX ux_audience_build_running ON audience_build (campaign_id) WHERE status = 'running';
-- statement
CREATE INDEX ix_audience_build_status ON audience_build (status, campaign_id);
-- statement
CREATE INDEX ix_audience_build_campaign_id ON audience_build (campaign_id);
-- statement
CREATE TABLE mailing (
	id SERIAL NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	campaign_id INTEGER NOT NULL, 
	kind VARCHAR NOT NULL, 
	send_at TIMESTAMP WITHOUT TIME ZONE, 
	cron VARCHAR, 
	segment_id INTEGER, 
	expand_audience BOOLEAN NOT NULL, 
	status VARCHAR NOT NULL, 
	manual_paused BOOLEAN NOT NULL, 
	manual_paused_by VARCHAR, 
	paused_by_build_id INTEGER, 
	last_run_at TIMESTAMP WITHOUT TIME ZONE, 
	next_run_at TIMESTAMP WITHOUT TIME ZONE, 
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	version INTEGER NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (name)
);
-- statement
CREATE INDEX ix_mailing_campaign_id ON mailing (campaign_id);
-- statement
CREATE TABLE audit_log (
	id SERIAL NOT NULL, 
	at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	actor VARCHAR NOT NULL, 
	role VARCHAR NOT NULL, 
	origin VARCHAR NOT NULL, 
	action VARCHAR NOT NULL, 
	target_type VARCHAR NOT NULL, 
	target_id INTEGER, 
	target_name VARCHAR, 
	outcome VARCHAR NOT NULL, 
	details JSON NOT NULL, 
	PRIMARY KEY (id)
);
-- statement
CREATE INDEX ix_audit_target ON audit_log (target_type, target_id, at);
-- statement
CREATE TABLE scheduler_lease (
	name VARCHAR NOT NULL, 
	holder VARCHAR NOT NULL, 
	host VARCHAR NOT NULL, 
	pid INTEGER NOT NULL, 
	acquired_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	heartbeat_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	expires_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	PRIMARY KEY (name)
);
-- statement
CREATE TABLE store_meta (
	key VARCHAR NOT NULL, 
	value VARCHAR NOT NULL, 
	PRIMARY KEY (key)
);
-- statement
CREATE TABLE profile_field (
	id SERIAL NOT NULL, 
	database_id INTEGER NOT NULL, 
	name VARCHAR NOT NULL, 
	type VARCHAR NOT NULL, 
	slot VARCHAR NOT NULL, 
	position INTEGER NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (database_id, name), 
	UNIQUE (database_id, slot), 
	FOREIGN KEY(database_id) REFERENCES profile_database (id)
);
-- statement
CREATE INDEX ix_profile_field_database_id ON profile_field (database_id);
-- statement
CREATE TABLE profile (
	id SERIAL NOT NULL, 
	database_id INTEGER NOT NULL, 
	external_id VARCHAR NOT NULL, 
	in_gcg BOOLEAN NOT NULL, 
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	t0 VARCHAR, 
	t1 VARCHAR, 
	t2 VARCHAR, 
	t3 VARCHAR, 
	t4 VARCHAR, 
	t5 VARCHAR, 
	t6 VARCHAR, 
	t7 VARCHAR, 
	i0 BIGINT, 
	i1 BIGINT, 
	i2 BIGINT, 
	i3 BIGINT, 
	i4 BIGINT, 
	i5 BIGINT, 
	i6 BIGINT, 
	i7 BIGINT, 
	f0 FLOAT, 
	f1 FLOAT, 
	f2 FLOAT, 
	f3 FLOAT, 
	d0 DATE, 
	d1 DATE, 
	d2 DATE, 
	d3 DATE, 
	PRIMARY KEY (id), 
	UNIQUE (database_id, external_id), 
	FOREIGN KEY(database_id) REFERENCES profile_database (id)
);
-- statement
CREATE TABLE segment (
	id SERIAL NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	kind VARCHAR NOT NULL, 
	database_id INTEGER, 
	rule VARCHAR, 
	refresh_every_seconds INTEGER, 
	refresh_cron VARCHAR, 
	last_refreshed_at TIMESTAMP WITHOUT TIME ZONE, 
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	member_count INTEGER NOT NULL, 
	version INTEGER NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (name), 
	FOREIGN KEY(database_id) REFERENCES profile_database (id)
);
-- statement
CREATE TABLE mailing_run (
	id SERIAL NOT NULL, 
	mailing_id INTEGER NOT NULL, 
	scheduled_for TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	started_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	finished_at TIMESTAMP WITHOUT TIME ZONE, 
	recipients INTEGER NOT NULL, 
	status VARCHAR NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (mailing_id, scheduled_for), 
	FOREIGN KEY(mailing_id) REFERENCES mailing (id)
);
-- statement
CREATE INDEX ix_mailing_run_mailing_id ON mailing_run (mailing_id);
-- statement
CREATE TABLE segment_member (
	id SERIAL NOT NULL, 
	segment_id INTEGER NOT NULL, 
	profile_id INTEGER NOT NULL, 
	entered_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	entered_by VARCHAR NOT NULL, 
	left_at TIMESTAMP WITHOUT TIME ZONE, 
	left_by VARCHAR, 
	PRIMARY KEY (id), 
	FOREIGN KEY(segment_id) REFERENCES segment (id), 
	FOREIGN KEY(profile_id) REFERENCES profile (id)
);
-- statement
CREATE INDEX ix_segment_member_profile ON segment_member (profile_id);
-- statement
CREATE INDEX ix_segment_member_segment_left ON segment_member (segment_id, left_at);
-- statement
CREATE INDEX ix_segment_member_segment_entered ON segment_member (segment_id, entered_at);
-- statement
CREATE UNIQUE INDEX ux_segment_member_open ON segment_member (segment_id, profile_id) WHERE left_at IS NULL;
-- statement
CREATE TABLE campaign (
	id SERIAL NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	database_id INTEGER NOT NULL, 
	segment_id INTEGER NOT NULL, 
	status VARCHAR NOT NULL, 
	seed BIGINT NOT NULL, 
	lcg_enabled BOOLEAN NOT NULL, 
	lcg_percent_bp INTEGER NOT NULL, 
	lcg_limit INTEGER, 
	lcg_strata JSON NOT NULL, 
	lcg_cohort INTEGER NOT NULL, 
	segment_watermark BIGINT NOT NULL, 
	version INTEGER NOT NULL, 
	created_by VARCHAR NOT NULL, 
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	activated_at TIMESTAMP WITHOUT TIME ZONE, 
	completed_at TIMESTAMP WITHOUT TIME ZONE, 
	members INTEGER NOT NULL, 
	test_count INTEGER NOT NULL, 
	control_count INTEGER NOT NULL, 
	cohort_size INTEGER NOT NULL, 
	warnings JSON NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (name), 
	FOREIGN KEY(database_id) REFERENCES profile_database (id), 
	FOREIGN KEY(segment_id) REFERENCES segment (id)
);
-- statement
CREATE INDEX ix_campaign_status ON campaign (status);
-- statement
CREATE TABLE gcg_exception (
	database_id INTEGER NOT NULL, 
	campaign_id INTEGER NOT NULL, 
	PRIMARY KEY (database_id, campaign_id), 
	FOREIGN KEY(database_id) REFERENCES profile_database (id), 
	FOREIGN KEY(campaign_id) REFERENCES campaign (id)
);
-- statement
CREATE TABLE campaign_stratum (
	campaign_id INTEGER NOT NULL, 
	stratum_key VARCHAR NOT NULL, 
	members INTEGER NOT NULL, 
	cohort INTEGER NOT NULL, 
	control INTEGER NOT NULL, 
	quota INTEGER NOT NULL, 
	PRIMARY KEY (campaign_id, stratum_key), 
	FOREIGN KEY(campaign_id) REFERENCES campaign (id)
);
-- statement
CREATE TABLE campaign_member (
	id SERIAL NOT NULL, 
	campaign_id INTEGER NOT NULL, 
	profile_id INTEGER NOT NULL, 
	"group" VARCHAR NOT NULL, 
	joined_group VARCHAR NOT NULL, 
	source VARCHAR NOT NULL, 
	stratum_key VARCHAR NOT NULL, 
	assignment_hash BIGINT NOT NULL, 
	cohort INTEGER, 
	joined_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	joined_build_id INTEGER, 
	joined_by VARCHAR NOT NULL, 
	left_at TIMESTAMP WITHOUT TIME ZONE, 
	left_build_id INTEGER, 
	left_by VARCHAR, 
	PRIMARY KEY (id), 
	FOREIGN KEY(campaign_id) REFERENCES campaign (id), 
	FOREIGN KEY(profile_id) REFERENCES profile (id), 
	FOREIGN KEY(joined_build_id) REFERENCES audience_build (id), 
	FOREIGN KEY(left_build_id) REFERENCES audience_build (id)
);
-- statement
CREATE INDEX ix_campaign_member_group ON campaign_member (campaign_id, "group", stratum_key, assignment_hash);
-- statement
CREATE UNIQUE INDEX ux_campaign_member_open ON campaign_member (campaign_id, profile_id) WHERE left_at IS NULL;
-- statement
CREATE INDEX ix_campaign_member_profile ON campaign_member (profile_id);
-- statement
CREATE TABLE profile_event (
	id SERIAL NOT NULL, 
	at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	profile_id INTEGER NOT NULL, 
	kind VARCHAR NOT NULL, 
	campaign_id INTEGER, 
	segment_id INTEGER, 
	"group" VARCHAR, 
	build_id INTEGER, 
	actor VARCHAR NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(profile_id) REFERENCES profile (id), 
	FOREIGN KEY(campaign_id) REFERENCES campaign (id), 
	FOREIGN KEY(segment_id) REFERENCES segment (id), 
	FOREIGN KEY(build_id) REFERENCES audience_build (id)
);
-- statement
CREATE UNIQUE INDEX ux_profile_event_build ON profile_event (build_id, profile_id, kind, campaign_id) WHERE build_id IS NOT NULL;
-- statement
CREATE INDEX ix_profile_event_profile_at ON profile_event (profile_id, at);
-- statement
CREATE TABLE delivery (
	id SERIAL NOT NULL, 
	run_id INTEGER NOT NULL, 
	mailing_id INTEGER NOT NULL, 
	campaign_id INTEGER NOT NULL, 
	profile_id INTEGER NOT NULL, 
	sent_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (run_id, profile_id), 
	FOREIGN KEY(run_id) REFERENCES mailing_run (id), 
	FOREIGN KEY(mailing_id) REFERENCES mailing (id), 
	FOREIGN KEY(campaign_id) REFERENCES campaign (id), 
	FOREIGN KEY(profile_id) REFERENCES profile (id)
);
-- statement
CREATE INDEX ix_delivery_profile ON delivery (profile_id);
-- statement
ALTER TABLE audience_build ADD FOREIGN KEY(campaign_id) REFERENCES campaign (id);
-- statement
ALTER TABLE mailing ADD FOREIGN KEY(campaign_id) REFERENCES campaign (id);
-- statement
ALTER TABLE audience_build ADD FOREIGN KEY(mailing_id) REFERENCES mailing (id);
-- statement
ALTER TABLE mailing ADD FOREIGN KEY(segment_id) REFERENCES segment (id);
-- statement
ALTER TABLE mailing ADD FOREIGN KEY(paused_by_build_id) REFERENCES audience_build (id);
-- statement
CREATE OR REPLACE FUNCTION cc_assignment_hash(seed bigint, external_id text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS
$$ SELECT ('x' || substr(md5(seed::text || ':' || external_id), 1, 16))::bit(64)::bigint $$;
-- statement
INSERT INTO store_meta (key, value) VALUES ('schema_version', '1');
