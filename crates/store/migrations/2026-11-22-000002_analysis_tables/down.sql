DROP TABLE botnet_detections;
DROP TABLE snowshoe_detections;
DROP TABLE longtail_detections;
DROP TABLE longtail_analysis;
