//! Diesel table definitions, written by hand to match `migrations/` exactly.

diesel::table! {
    schema_state (key) {
        key -> Varchar,
        value -> Varchar,
    }
}

diesel::table! {
    raw_events (id) {
        id -> Int8,
        ingest_id -> Nullable<Varchar>,
        ingest_at -> Timestamptz,
        source -> Varchar,
        stream_id -> Varchar,
        source_generation -> Int4,
        source_offset -> Int8,
        source_line -> Int8,
        source_inode -> Nullable<Varchar>,
        payload -> Jsonb,
        payload_hash -> Varchar,
        risk_score -> Nullable<Int4>,
        quarantined -> Bool,
        session_id -> Nullable<Varchar>,
        event_type -> Varchar,
        event_timestamp -> Timestamptz,
        src_ip -> Nullable<Varchar>,
        sensor -> Varchar,
    }
}

diesel::table! {
    session_summaries (session_id) {
        session_id -> Varchar,
        first_event_at -> Timestamptz,
        last_event_at -> Timestamptz,
        event_count -> Int4,
        command_count -> Int4,
        file_downloads -> Int4,
        login_attempts -> Int4,
        ssh_key_injections -> Int4,
        unique_ssh_keys -> Int4,
        vt_flagged -> Bool,
        dshield_flagged -> Bool,
        risk_score -> Nullable<Int4>,
        matcher -> Nullable<Varchar>,
        sensor -> Varchar,
        src_ip -> Nullable<Varchar>,
        protocol -> Nullable<Varchar>,
        username -> Nullable<Text>,
        password -> Nullable<Text>,
        login_success -> Bool,
        client_version -> Nullable<Text>,
        hassh -> Nullable<Varchar>,
        duration_seconds -> Nullable<Float8>,
        source_files -> Jsonb,
        enrichment -> Nullable<Jsonb>,
        enrichment_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    files (id) {
        id -> Int8,
        session_id -> Varchar,
        shasum -> Varchar,
        direction -> Varchar,
        filename -> Nullable<Varchar>,
        outfile -> Nullable<Varchar>,
        file_size -> Nullable<Int8>,
        download_url -> Nullable<Varchar>,
        src_ip -> Nullable<Varchar>,
        sensor -> Varchar,
        vt_classification -> Nullable<Varchar>,
        vt_description -> Nullable<Text>,
        vt_malicious -> Bool,
        vt_positives -> Nullable<Int4>,
        vt_total -> Nullable<Int4>,
        first_seen -> Timestamptz,
        last_updated -> Timestamptz,
        enrichment_status -> Varchar,
    }
}

diesel::table! {
    ingest_cursors (stream_id) {
        stream_id -> Varchar,
        sensor -> Varchar,
        source -> Varchar,
        inode -> Nullable<Varchar>,
        first_line_hash -> Varchar,
        generation -> Int4,
        last_offset -> Int8,
        last_line -> Int8,
        finished -> Bool,
        last_ingest_at -> Timestamptz,
        last_ingest_id -> Nullable<Varchar>,
        metadata_json -> Jsonb,
    }
}

diesel::table! {
    dead_letter_events (id) {
        id -> Int8,
        ingest_id -> Nullable<Varchar>,
        source -> Varchar,
        stream_id -> Varchar,
        source_generation -> Int4,
        source_offset -> Int8,
        source_line -> Int8,
        sensor -> Varchar,
        reason -> Varchar,
        detail -> Nullable<Text>,
        raw_line -> Text,
        raw_bytes -> Bytea,
        payload -> Nullable<Jsonb>,
        created_at -> Timestamptz,
        resolved -> Bool,
        resolved_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    longtail_analysis (id) {
        id -> Int8,
        analysis_time -> Timestamptz,
        sensor -> Nullable<Varchar>,
        window_start -> Timestamptz,
        window_end -> Timestamptz,
        lookback_days -> Nullable<Int4>,
        confidence_score -> Nullable<Float8>,
        total_events_analyzed -> Int4,
        rare_command_count -> Int4,
        anomalous_sequence_count -> Int4,
        outlier_session_count -> Int4,
        emerging_pattern_count -> Int4,
        high_entropy_payload_count -> Int4,
        analysis_results -> Jsonb,
        statistical_summary -> Nullable<Jsonb>,
        recommendation -> Nullable<Text>,
        analysis_duration_seconds -> Nullable<Float8>,
        memory_usage_mb -> Nullable<Float8>,
        data_quality_score -> Nullable<Float8>,
        enrichment_coverage -> Nullable<Float8>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    longtail_detections (id) {
        id -> Int8,
        analysis_id -> Int8,
        detection_type -> Varchar,
        session_id -> Nullable<Varchar>,
        event_id -> Nullable<Int8>,
        detection_data -> Jsonb,
        confidence_score -> Nullable<Float8>,
        severity_score -> Nullable<Float8>,
        timestamp -> Timestamptz,
        source_ip -> Nullable<Varchar>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    snowshoe_detections (id) {
        id -> Int8,
        detection_time -> Timestamptz,
        sensor -> Nullable<Varchar>,
        window_start -> Timestamptz,
        window_end -> Timestamptz,
        confidence_score -> Float8,
        unique_ips -> Int4,
        single_attempt_ips -> Int4,
        low_volume_ips -> Int4,
        geographic_spread -> Nullable<Float8>,
        indicators -> Jsonb,
        is_likely_snowshoe -> Bool,
        coordinated_timing -> Bool,
        recommendation -> Nullable<Text>,
        analysis_metadata -> Nullable<Jsonb>,
        result -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    botnet_detections (id) {
        id -> Int8,
        detection_time -> Timestamptz,
        sensor -> Nullable<Varchar>,
        window_start -> Timestamptz,
        window_end -> Timestamptz,
        coordination_score -> Float8,
        is_likely_botnet -> Bool,
        credential_reuse_ips -> Jsonb,
        similar_command_ips -> Jsonb,
        coordinated_timing -> Bool,
        geographic_clustering -> Bool,
        recommendation -> Nullable<Text>,
        indicators -> Jsonb,
        analysis_metadata -> Nullable<Jsonb>,
        result -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Varchar,
        name -> Varchar,
        key_hash -> Varchar,
        prefix -> Varchar,
        scopes -> Array<Text>,
        rate_limit -> Nullable<Varchar>,
        created_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(longtail_detections -> longtail_analysis (analysis_id));

diesel::allow_tables_to_appear_in_same_query!(
    schema_state,
    raw_events,
    session_summaries,
    files,
    ingest_cursors,
    dead_letter_events,
    longtail_analysis,
    longtail_detections,
    snowshoe_detections,
    botnet_detections,
    api_keys,
);
