-- Tables the analysis tasks write (spec section 3 output records).
-- Whole result objects go into JSONB columns; the columns beside them are for filtering.

CREATE TABLE longtail_analysis (
    id BIGSERIAL PRIMARY KEY,
    analysis_time TIMESTAMPTZ NOT NULL DEFAULT now(),
    sensor TEXT,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    lookback_days INTEGER,
    confidence_score DOUBLE PRECISION,
    total_events_analyzed INTEGER NOT NULL DEFAULT 0,
    rare_command_count INTEGER NOT NULL DEFAULT 0,
    anomalous_sequence_count INTEGER NOT NULL DEFAULT 0,
    outlier_session_count INTEGER NOT NULL DEFAULT 0,
    emerging_pattern_count INTEGER NOT NULL DEFAULT 0,
    high_entropy_payload_count INTEGER NOT NULL DEFAULT 0,
    analysis_results JSONB NOT NULL,
    statistical_summary JSONB,
    recommendation TEXT,
    analysis_duration_seconds DOUBLE PRECISION,
    memory_usage_mb DOUBLE PRECISION,
    data_quality_score DOUBLE PRECISION,
    enrichment_coverage DOUBLE PRECISION,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ix_longtail_analysis_time ON longtail_analysis (analysis_time);
CREATE INDEX ix_longtail_analysis_window ON longtail_analysis (window_start, window_end);

CREATE TABLE longtail_detections (
    id BIGSERIAL PRIMARY KEY,
    analysis_id BIGINT NOT NULL REFERENCES longtail_analysis (id) ON DELETE CASCADE,
    detection_type TEXT NOT NULL,
    session_id TEXT,
    event_id BIGINT,
    detection_data JSONB NOT NULL,
    confidence_score DOUBLE PRECISION,
    severity_score DOUBLE PRECISION,
    "timestamp" TIMESTAMPTZ NOT NULL,
    source_ip TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ix_longtail_detections_analysis ON longtail_detections (analysis_id);
CREATE INDEX ix_longtail_detections_type ON longtail_detections (detection_type);
CREATE INDEX ix_longtail_detections_session ON longtail_detections (session_id);

CREATE TABLE snowshoe_detections (
    id BIGSERIAL PRIMARY KEY,
    detection_time TIMESTAMPTZ NOT NULL DEFAULT now(),
    sensor TEXT,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    confidence_score DOUBLE PRECISION NOT NULL,
    unique_ips INTEGER NOT NULL DEFAULT 0,
    single_attempt_ips INTEGER NOT NULL DEFAULT 0,
    low_volume_ips INTEGER NOT NULL DEFAULT 0,
    geographic_spread DOUBLE PRECISION,
    indicators JSONB NOT NULL,
    is_likely_snowshoe BOOLEAN NOT NULL DEFAULT FALSE,
    coordinated_timing BOOLEAN NOT NULL DEFAULT FALSE,
    recommendation TEXT,
    analysis_metadata JSONB,
    result JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ix_snowshoe_detections_time ON snowshoe_detections (detection_time);
CREATE INDEX ix_snowshoe_detections_window ON snowshoe_detections (window_start, window_end);

CREATE TABLE botnet_detections (
    id BIGSERIAL PRIMARY KEY,
    detection_time TIMESTAMPTZ NOT NULL DEFAULT now(),
    sensor TEXT,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    coordination_score DOUBLE PRECISION NOT NULL,
    is_likely_botnet BOOLEAN NOT NULL DEFAULT FALSE,
    credential_reuse_ips JSONB NOT NULL DEFAULT '[]'::jsonb,
    similar_command_ips JSONB NOT NULL DEFAULT '[]'::jsonb,
    coordinated_timing BOOLEAN NOT NULL DEFAULT FALSE,
    geographic_clustering BOOLEAN NOT NULL DEFAULT FALSE,
    recommendation TEXT,
    indicators JSONB NOT NULL,
    analysis_metadata JSONB,
    result JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ix_botnet_detections_time ON botnet_detections (detection_time);
CREATE INDEX ix_botnet_detections_window ON botnet_detections (window_start, window_end);
